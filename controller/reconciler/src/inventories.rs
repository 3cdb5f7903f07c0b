//! The controller's copy of each pool's inventory, per (node, pool).
//!
//! Every reconcile still asks the agent (the agent, not this cache, knows whether the
//! pool changed), but it asks with the generation it holds, so an unchanged pool costs
//! an `Unchanged` answer instead of the whole listing. Reconciles of many schedules on
//! one pool share calls: a reconcile joins the next call that *starts after it asked*,
//! never one already under way, so the inventory it uses is never older than its own
//! request (after its own `TakeSnapshots`, retention must see the snapshot just taken).
//! At most one call per pool is in flight; everyone who asked meanwhile shares the one
//! after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tidepool_agent::LeaderEpoch;
use tidepool_api::PoolName;
use tidepool_wire::{InventoryAnswer, InventoryGeneration, InventoryRequest, PoolInventory};
use tidepool_wire::{Request, Response};
use tokio::sync::watch;

use crate::agents::{AgentEndpoint, AgentError, Agents};

/// The answer one call gave, shared by everyone who waited for it.
pub type Shared = Result<Arc<PoolInventory>, Arc<AgentError>>;

/// The last inventory a node's agent gave for a pool.
#[derive(Debug, Clone)]
pub struct Cached {
    pub generation: InventoryGeneration,
    pub inventory: Arc<PoolInventory>,
    /// Whom it came from: a generation means nothing to another agent.
    pub endpoint: AgentEndpoint,
}

/// One pool's calls: numbered as they start; `completed` is the number of the last one
/// that finished.
#[derive(Debug, Default)]
pub struct SlotState {
    started: u64,
    completed: u64,
    in_flight: bool,
    cached: Option<Cached>,
    last: Option<Shared>,
}

/// What a reconcile waiting for call number `need` does next.
#[derive(Debug)]
pub enum Step {
    /// That call (or a later one) has finished: use its answer.
    Use(Shared),
    /// Nobody is calling: start call `need` with this `since`.
    Start(Option<InventoryGeneration>),
    /// A call is under way: wait for it to finish and look again.
    Wait,
}

impl SlotState {
    /// The number of the first call that starts after now: the one a new request needs.
    pub fn ask(&self) -> u64 {
        self.started + 1
    }

    /// Decides, and marks a call started when it says [`Step::Start`].
    pub fn step(&mut self, need: u64, endpoint: &AgentEndpoint) -> Step {
        if self.completed >= need
            && let Some(last) = &self.last
        {
            return Step::Use(last.clone());
        }
        if self.in_flight {
            return Step::Wait;
        }
        self.in_flight = true;
        self.started += 1;
        let since = self
            .cached
            .as_ref()
            .filter(|c| &c.endpoint == endpoint)
            .map(|c| c.generation);
        Step::Start(since)
    }

    /// Records the end of the call in flight.
    pub fn finish(&mut self, result: Result<Cached, AgentError>) {
        self.in_flight = false;
        self.completed = self.started;
        self.last = Some(match result {
            Ok(c) => {
                let inv = c.inventory.clone();
                self.cached = Some(c);
                Ok(inv)
            }
            Err(e) => Err(Arc::new(e)),
        });
    }

    pub fn cached(&self) -> Option<&Cached> {
        self.cached.as_ref()
    }
}

/// What an agent's answer means given what we hold: the inventory to use, or `None` when
/// it said `Unchanged` about a generation we do not hold (ask again in full).
pub fn settle(
    held: Option<&Cached>,
    endpoint: &AgentEndpoint,
    answer: InventoryAnswer,
) -> Option<Cached> {
    match answer {
        InventoryAnswer::Full {
            generation,
            inventory,
        } => Some(Cached {
            generation,
            inventory: Arc::new(inventory),
            endpoint: endpoint.clone(),
        }),
        InventoryAnswer::Unchanged { generation } => held
            .filter(|c| c.generation == generation && &c.endpoint == endpoint)
            .cloned(),
    }
}

struct Slot {
    state: Mutex<SlotState>,
    /// The number of the last finished call.
    done: watch::Sender<u64>,
}

/// Every pool's cache. Cheap to share: clone the `Arc`.
#[derive(Default)]
pub struct Inventories {
    slots: Mutex<HashMap<(String, PoolName), Arc<Slot>>>,
}

impl Inventories {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn slot(&self, node: &str, pool: &PoolName) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .entry((node.to_owned(), pool.clone()))
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState::default()),
                    done: watch::channel(0).0,
                })
            })
            .clone()
    }

    /// The pool's inventory from a call that started after this was asked.
    pub async fn get(
        &self,
        agents: &Arc<dyn Agents>,
        agent: &AgentEndpoint,
        epoch: LeaderEpoch,
        pool: PoolName,
    ) -> Shared {
        let slot = self.slot(&agent.node, &pool);
        let need = lock(&slot.state).ask();
        loop {
            let (step, mut done) = {
                let mut state = lock(&slot.state);
                // Subscribed under the lock: a call cannot finish unseen in between.
                (state.step(need, agent), slot.done.subscribe())
            };
            match step {
                Step::Use(answer) => return answer,
                Step::Start(since) => {
                    // In a task of its own: a reconcile dropped midway (leadership lost)
                    // must not leave the others waiting for a call nobody finishes.
                    let (slot, agents, agent) = (slot.clone(), agents.clone(), agent.clone());
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let held = lock(&slot.state).cached().cloned();
                        let result = fetch(&*agents, &agent, epoch, pool, since, held).await;
                        let number = {
                            let mut state = lock(&slot.state);
                            state.finish(result);
                            state.completed
                        };
                        slot.done.send_replace(number);
                    });
                }
                Step::Wait => {}
            }
            // The sender lives in `slot`, which we hold: `changed` cannot fail for lack
            // of a sender; should it, looking again is still right.
            let _ = done.changed().await;
        }
    }
}

fn lock(m: &Mutex<SlotState>) -> std::sync::MutexGuard<'_, SlotState> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One call (two when the agent says `Unchanged` about a generation we do not hold).
async fn fetch(
    agents: &dyn Agents,
    agent: &AgentEndpoint,
    epoch: LeaderEpoch,
    pool: PoolName,
    since: Option<InventoryGeneration>,
    held: Option<Cached>,
) -> Result<Cached, AgentError> {
    let mut since = since;
    loop {
        let request = Request::Inventory(InventoryRequest {
            pool: pool.clone(),
            since,
        });
        let answer = match agents.call(agent, epoch, request).await? {
            Response::Inventory(a) => a,
            other => return Err(AgentError::unexpected(&agent.node, "Inventory", &other)),
        };
        match settle(held.as_ref(), agent, answer) {
            Some(c) => return Ok(c),
            None if since.is_some() => since = None,
            None => {
                return Err(AgentError::Unexpected {
                    node: agent.node.clone(),
                    asked: "Inventory",
                    got: "Unchanged",
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "inventories_tests.rs"]
mod tests;
