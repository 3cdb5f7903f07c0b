#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use tidepool_wire::PoolHealth;
use tokio::sync::Semaphore;

use super::*;

fn endpoint(addr: &str) -> AgentEndpoint {
    AgentEndpoint {
        node: "n1".into(),
        endpoint: addr.into(),
        pin: "ab".repeat(32).parse().unwrap(),
    }
}

fn pool() -> PoolName {
    "tank".parse().unwrap()
}

fn listing(free: u64) -> PoolInventory {
    PoolInventory {
        pool: pool(),
        health: PoolHealth::Online,
        size_bytes: 100,
        allocated_bytes: 100 - free,
        free_bytes: free,
        capabilities: Default::default(),
        datasets: Vec::new(),
        unnamed_datasets: 0,
    }
}

fn cached(generation: u64) -> Cached {
    Cached {
        generation: InventoryGeneration(generation),
        inventory: Arc::new(listing(generation)),
        endpoint: endpoint("a:1"),
    }
}

#[test]
fn unchanged_reuses_what_we_hold_and_only_that() {
    let held = cached(7);
    let same = settle(
        Some(&held),
        &endpoint("a:1"),
        InventoryAnswer::Unchanged {
            generation: InventoryGeneration(7),
        },
    )
    .unwrap();
    assert!(Arc::ptr_eq(&same.inventory, &held.inventory));
    // Another generation, another agent, or nothing held: ask again in full.
    let other = InventoryAnswer::Unchanged {
        generation: InventoryGeneration(8),
    };
    assert!(settle(Some(&held), &endpoint("a:1"), other.clone()).is_none());
    let same_gen = InventoryAnswer::Unchanged {
        generation: InventoryGeneration(7),
    };
    assert!(settle(Some(&held), &endpoint("b:1"), same_gen.clone()).is_none());
    assert!(settle(None, &endpoint("a:1"), same_gen).is_none());
    let full = settle(
        Some(&held),
        &endpoint("a:1"),
        InventoryAnswer::Full {
            generation: InventoryGeneration(9),
            inventory: listing(9),
        },
    )
    .unwrap();
    assert_eq!(full.generation, InventoryGeneration(9));
    assert_eq!(full.inventory.free_bytes, 9);
}

#[test]
fn a_request_never_takes_a_call_that_started_before_it() {
    let ep = endpoint("a:1");
    let mut s = SlotState::default();
    let first = s.ask();
    assert!(matches!(s.step(first, &ep), Step::Start(None)));
    // Asked while call 1 is under way: needs call 2.
    let second = s.ask();
    assert_eq!(second, first + 1);
    assert!(matches!(s.step(second, &ep), Step::Wait));
    assert!(matches!(s.step(first, &ep), Step::Wait));
    s.finish(Ok(cached(3)));
    assert!(matches!(s.step(first, &ep), Step::Use(Ok(_))));
    // Call 1 finished, but it started before the second request: a new call, with
    // the generation held.
    match s.step(second, &ep) {
        Step::Start(since) => assert_eq!(since, Some(InventoryGeneration(3))),
        other => panic!("{other:?}"),
    }
    // Someone else who asked before call 2 started shares it.
    assert!(matches!(s.step(second, &ep), Step::Wait));
    s.finish(Err(AgentError::NotPublished {
        node: "n1".into(),
        what: "an endpoint",
    }));
    assert!(matches!(s.step(second, &ep), Step::Use(Err(_))));
    // The failure does not forget the listing held, and a new agent is asked in full.
    assert!(matches!(
        s.step(s.ask(), &endpoint("b:1")),
        Step::Start(None)
    ));
}

/// An agent whose pool changes when told; calls wait for a permit so a test can hold
/// one in flight.
struct FakeAgent {
    state: AtomicU64,
    calls: AtomicU64,
    full: AtomicU64,
    gate: Semaphore,
}

impl Agents for FakeAgent {
    fn transfer<'a>(
        &'a self,
        _agent: &'a AgentEndpoint,
        _epoch: LeaderEpoch,
        _call: crate::agents::TransferCall,
    ) -> BoxFuture<'a, Result<crate::agents::TransferAnswer, AgentError>> {
        panic!("only inventories here")
    }

    fn call<'a>(
        &'a self,
        _agent: &'a AgentEndpoint,
        _epoch: LeaderEpoch,
        request: Request,
    ) -> BoxFuture<'a, Result<Response, AgentError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let Request::Inventory(req) = request else {
                panic!("only inventories here");
            };
            // Read when the call starts, as the agent's listing is.
            let now = self.state.load(Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            let generation = InventoryGeneration(now);
            Ok(Response::Inventory(if req.since == Some(generation) {
                InventoryAnswer::Unchanged { generation }
            } else {
                self.full.fetch_add(1, Ordering::SeqCst);
                InventoryAnswer::Full {
                    generation,
                    inventory: listing(now),
                }
            }))
        })
    }
}

async fn settled(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn concurrent_requests_share_calls_and_see_changes_made_before_they_asked() {
    let fake = Arc::new(FakeAgent {
        state: AtomicU64::new(1),
        calls: AtomicU64::new(0),
        full: AtomicU64::new(0),
        gate: Semaphore::new(0),
    });
    let agents: Arc<dyn Agents> = fake.clone();
    let cache = Inventories::new();
    let ep = endpoint("a:1");
    let get = |cache: Arc<Inventories>| {
        let (agents, ep) = (agents.clone(), ep.clone());
        tokio::spawn(async move {
            cache
                .get(&agents, &ep, LeaderEpoch(1), pool())
                .await
                .unwrap()
                .free_bytes
        })
    };
    let first = get(cache.clone());
    settled(|| fake.calls.load(Ordering::SeqCst) == 1).await;
    // The pool changes (our own snapshot, say) while call 1 is under way; 20 reconciles
    // ask after the change: none may use call 1's listing, and they share one call.
    fake.state.store(2, Ordering::SeqCst);
    let later: Vec<_> = (0..20).map(|_| get(cache.clone())).collect();
    tokio::task::yield_now().await;
    fake.gate.add_permits(1);
    assert_eq!(first.await.unwrap(), 1);
    settled(|| fake.calls.load(Ordering::SeqCst) == 2).await;
    fake.gate.add_permits(1);
    for l in later {
        assert_eq!(l.await.unwrap(), 2);
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    // Nothing changed since: asked with the generation, answered Unchanged, the listing
    // held is reused.
    fake.gate.add_permits(1);
    assert_eq!(get(cache.clone()).await.unwrap(), 2);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    assert_eq!(fake.full.load(Ordering::SeqCst), 2);
}
