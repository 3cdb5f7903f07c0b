#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use tidepool_wire::{PoolHealth, SetCreated};
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

fn call_of(need: Need) -> u64 {
    match need {
        Need::Call(n) => n,
        held => panic!("expected a call, got {held:?}"),
    }
}

#[test]
fn a_request_after_asking_never_takes_a_call_that_started_before_it() {
    let ep = endpoint("a:1");
    let t0 = Instant::now();
    let mut s = SlotState::default();
    let first = call_of(s.need(Freshness::AfterAsking, &ep, t0));
    assert!(matches!(s.step(first, &ep, t0), Step::Start(None)));
    // Asked while call 1 is under way: needs call 2.
    let second = call_of(s.need(Freshness::AfterAsking, &ep, t0));
    assert_eq!(second, first + 1);
    assert!(matches!(s.step(second, &ep, t0), Step::Wait));
    assert!(matches!(s.step(first, &ep, t0), Step::Wait));
    s.finish(Ok(cached(3)));
    assert!(matches!(s.step(first, &ep, t0), Step::Use(Ok(_))));
    // Call 1 finished, but it started before the second request: a new call, with
    // the generation held.
    match s.step(second, &ep, t0) {
        Step::Start(since) => assert_eq!(since, Some(InventoryGeneration(3))),
        other => panic!("{other:?}"),
    }
    // Someone else who asked before call 2 started shares it.
    assert!(matches!(s.step(second, &ep, t0), Step::Wait));
    s.finish(Err(AgentError::NotPublished {
        node: "n1".into(),
        what: "an endpoint",
    }));
    assert!(matches!(s.step(second, &ep, t0), Step::Use(Err(_))));
    // The failure does not forget the listing held, and a new agent is asked in full.
    let other = endpoint("b:1");
    let third = call_of(s.need(Freshness::AfterAsking, &other, t0));
    assert!(matches!(s.step(third, &other, t0), Step::Start(None)));
}

#[test]
fn a_request_within_an_age_uses_a_young_listing_joins_a_young_call_and_refreshes_at_half_age() {
    let ep = endpoint("a:1");
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let within = Freshness::Within(Duration::from_secs(4));
    let mut s = SlotState::default();
    // Nothing held: a call.
    let first = call_of(s.need(within, &ep, t0));
    assert!(matches!(s.step(first, &ep, t0), Step::Start(None)));
    // Asked while a young call is under way: that call will do.
    assert_eq!(s.need(within, &ep, at(1000)), Need::Call(first));
    s.finish(Ok(cached(3)));
    // Listed by a call that started at t0: young until 4 s, refreshed from 2 s on.
    assert_eq!(s.need(within, &ep, at(1500)), Need::Held { refresh: false });
    assert_eq!(s.need(within, &ep, at(2500)), Need::Held { refresh: true });
    // Never for another agent, and not once too old.
    assert!(matches!(
        s.need(within, &endpoint("b:1"), at(10)),
        Need::Call(_)
    ));
    let old = call_of(s.need(within, &ep, at(4001)));
    assert_eq!(old, first + 1);
    // A call under way that is itself too old is not joined: the one after it is.
    assert!(matches!(s.step(old, &ep, at(4001)), Step::Start(Some(_))));
    assert_eq!(s.need(within, &ep, at(9000)), Need::Call(old + 1));
    // A failure is shared by those who waited for the call, never held.
    s.finish(Err(AgentError::NotPublished {
        node: "n1".into(),
        what: "an endpoint",
    }));
    assert!(matches!(s.step(old, &ep, at(9000)), Step::Use(Err(_))));
    assert!(matches!(s.need(within, &ep, at(9001)), Need::Call(_)));
}

fn snap_ref(name: &str, guid: u64) -> SnapshotRef {
    SnapshotRef {
        snapshot: name.parse().unwrap(),
        guid,
    }
}

fn with_dataset(generation: u64) -> Cached {
    let mut inv = listing(generation);
    inv.datasets
        .push(tidepool_wire::DatasetInventory::with_snapshots(
            "tank/a".parse().unwrap(),
            Vec::new(),
        ));
    Cached {
        inventory: Arc::new(inv),
        ..cached(generation)
    }
}

fn snapshot_names(inv: &PoolInventory) -> Vec<String> {
    inv.datasets[0]
        .snapshots
        .iter()
        .map(|s| s.name.to_string())
        .collect()
}

#[test]
fn our_own_edits_reach_the_listing_held_and_a_listing_that_predates_them() {
    let ep = endpoint("a:1");
    let t0 = Instant::now();
    let within = Freshness::Within(Duration::from_secs(4));
    let owner: Owner = "SnapshotSchedule/ns/s".parse().unwrap();
    let taken = |name: &str, guid| Edit::Taken {
        snapshots: vec![snap_ref(name, guid)],
        created: SetCreated {
            createtxg: guid,
            creation: jiff::Timestamp::UNIX_EPOCH,
        },
        owner: owner.clone(),
    };
    let mut s = SlotState::default();
    let n = call_of(s.need(within, &ep, t0));
    assert!(matches!(s.step(n, &ep, t0), Step::Start(None)));
    s.finish(Ok(with_dataset(3)));
    s.edit(&ep, taken("tank/a@one", 11));
    assert_eq!(snapshot_names(&s.held().unwrap()), ["one"]);
    // Edited, the generation no longer describes what is held: asked in full.
    assert_eq!(s.start(&ep, t0), None);
    // Made while that call is under way: its answer may not show them.
    s.edit(&ep, taken("tank/a@two", 12));
    s.edit(&ep, Edit::Destroyed(vec![snap_ref("tank/a@one", 11)]));
    s.finish(Ok(with_dataset(4)));
    assert_eq!(snapshot_names(&s.held().unwrap()), ["two"]);
    // Applying an edit again changes nothing.
    s.edit(&ep, taken("tank/a@two", 12));
    s.edit(&ep, Edit::Destroyed(vec![snap_ref("tank/a@one", 11)]));
    assert_eq!(snapshot_names(&s.held().unwrap()), ["two"]);
    // A command that found the pool otherwise expires the listing: the next run calls.
    assert!(matches!(s.need(within, &ep, t0), Need::Held { .. }));
    s.expire();
    assert!(matches!(s.need(within, &ep, t0), Need::Call(_)));
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
                .get(&agents, &ep, LeaderEpoch(1), pool(), Freshness::AfterAsking)
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

#[tokio::test]
async fn requests_within_an_age_share_one_call_and_then_call_nobody_until_half_age() {
    let fake = Arc::new(FakeAgent {
        state: AtomicU64::new(1),
        calls: AtomicU64::new(0),
        full: AtomicU64::new(0),
        gate: Semaphore::new(0),
    });
    let agents: Arc<dyn Agents> = fake.clone();
    let cache = Inventories::new();
    let ep = endpoint("a:1");
    let within = Freshness::Within(Duration::from_millis(400));
    let get = |cache: Arc<Inventories>| {
        let (agents, ep) = (agents.clone(), ep.clone());
        tokio::spawn(async move {
            let inv = cache.get(&agents, &ep, LeaderEpoch(1), pool(), within);
            inv.await.unwrap().free_bytes
        })
    };
    let burst: Vec<_> = (0..20).map(|_| get(cache.clone())).collect();
    settled(|| fake.calls.load(Ordering::SeqCst) == 1).await;
    fake.gate.add_permits(1);
    for b in burst {
        assert_eq!(b.await.unwrap(), 1);
    }
    // Young: answered from what is held, the agent not asked.
    fake.state.store(2, Ordering::SeqCst);
    assert_eq!(get(cache.clone()).await.unwrap(), 1);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    // Past half its age: still answered at once, and refreshed in the background.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(get(cache.clone()).await.unwrap(), 1);
    settled(|| fake.calls.load(Ordering::SeqCst) == 2).await;
    fake.gate.add_permits(1);
    settled(|| fake.full.load(Ordering::SeqCst) == 2).await;
    settled(|| {
        let slot = cache.slot(&ep.node, &pool());
        let held = lock(&slot.state).held();
        held.is_some_and(|h| h.free_bytes == 2)
    })
    .await;
    assert_eq!(get(cache.clone()).await.unwrap(), 2);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_request_for_the_listing_held_takes_it_at_any_age_until_a_failure_expires_it() {
    let ep = endpoint("a:1");
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let held = Freshness::Held {
        refresh_after: Duration::from_secs(10),
    };
    let mut s = SlotState::default();
    // Nothing held: a call, which later requests join whatever its age.
    let first = call_of(s.need(held, &ep, t0));
    assert!(matches!(s.step(first, &ep, t0), Step::Start(None)));
    assert_eq!(s.need(held, &ep, at(3600)), Need::Call(first));
    s.finish(Ok(cached(3)));
    assert_eq!(s.need(held, &ep, at(5)), Need::Held { refresh: false });
    assert_eq!(s.need(held, &ep, at(3600)), Need::Held { refresh: true });
    assert_eq!(s.held_age(at(3600)), Some(Duration::from_secs(3600)));
    // Not while a refresh is under way.
    s.start(&ep, at(3600));
    assert_eq!(s.need(held, &ep, at(3601)), Need::Held { refresh: false });
    s.finish(Ok(cached(4)));
    assert_eq!(s.held_age(at(3601)), Some(Duration::from_secs(1)));
    s.expire();
    assert_eq!(s.held_age(at(3601)), None);
    assert!(matches!(s.need(held, &ep, at(3601)), Need::Call(_)));
}
