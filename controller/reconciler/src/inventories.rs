//! The controller's copy of each pool's inventory, per (node, pool).
//!
//! A request says how fresh a listing it needs ([`Freshness`]):
//! - [`Freshness::AfterAsking`]: from a call that *starts after it asked*, never one already
//!   under way (what replication, deletion and explain use: they act on holds, bases and
//!   received state that only a listing shows).
//! - [`Freshness::Within`]: a listing from a call that started at most that long ago, with
//!   the controller's own takes and destroys on the pool since merged in ([`Edit`]). What a
//!   schedule's run that takes a snapshot uses.
//! - [`Freshness::Held`]: the listing held, however old, with the same edits merged in.
//!   What a schedule's run starts from: a spec change or a run that only prunes and
//!   reports then needs no agent round trip; a run that turns out to take a snapshot on a
//!   listing older than `Within` allows is decided again on a younger one
//!   (`node_run::run_node`), so a recursive snapshot never misses a child that was listed
//!   long ago.
//!
//! A stale view cannot hurt: the agent checks every command again against a fresh read
//! (names, GUIDs, ownership, and the snapshots a prune keeps: `DestroySnapshots::keeping`).
//! A listing used past its refresh age is refreshed in the background, so a busy pool is
//! never waited on.
//!
//! Calls are asked with the generation held, so an unchanged pool costs an `Unchanged`
//! answer instead of the whole listing. At most one call per pool is in flight; everyone
//! who needs a call meanwhile shares the next one (or the one under way, when it is fresh
//! enough). A failure is shared the same way and never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tidepool_agent::LeaderEpoch;
use tidepool_api::PoolName;
use tidepool_wire::{InventoryAnswer, InventoryGeneration, InventoryRequest, PoolInventory};
use tidepool_wire::{Owner, Request, Response, SetCreated, SnapshotRef};
use tokio::sync::watch;

use crate::agents::{AgentEndpoint, AgentError, Agents};
use crate::work;

/// The answer one call gave, shared by everyone who waited for it.
pub type Shared = Result<Arc<PoolInventory>, Arc<AgentError>>;

/// How fresh a listing a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// From a call that starts after the request.
    AfterAsking,
    /// From a call that started at most this long ago, our own edits since merged in.
    Within(Duration),
    /// The listing held however old (unless a failure expired it), refreshed in the
    /// background once older than `refresh_after`: for a decision that takes nothing.
    Held { refresh_after: Duration },
}

/// A change the controller itself made to a pool through its agent, merged into the
/// listing held so that a listing from before it still shows it. Applying one twice, or to
/// a listing that already shows it, changes nothing.
#[derive(Debug, Clone)]
pub enum Edit {
    Taken {
        snapshots: Vec<SnapshotRef>,
        created: SetCreated,
        owner: Owner,
    },
    Destroyed(Vec<SnapshotRef>),
}

impl Edit {
    fn apply(&self, inventory: &PoolInventory) -> PoolInventory {
        match self {
            Edit::Taken {
                snapshots,
                created,
                owner,
            } => work::with_taken(inventory, snapshots, *created, owner),
            Edit::Destroyed(gone) => work::without(inventory, gone),
        }
    }
}

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
    /// When the call in flight started.
    in_flight: Option<Instant>,
    cached: Option<Cached>,
    /// When the call that listed `cached` started; `None` once a failure, a change of
    /// agent or a stale view spotted by a command says it no longer stands for the pool.
    listed_at: Option<Instant>,
    /// `cached` has our edits merged in, so its generation no longer describes it.
    edited: bool,
    /// Edits made while a call was in flight: its answer may predate them.
    pending: Vec<Edit>,
    last: Option<Shared>,
}

/// What a request needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// The listing held is fresh enough; `refresh` when it is past its refresh age and no
    /// call is under way (start one in the background).
    Held { refresh: bool },
    /// The answer of this call (or a later one).
    Call(u64),
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
    /// What a request made at `now` needs.
    pub fn need(&self, freshness: Freshness, endpoint: &AgentEndpoint, now: Instant) -> Need {
        let (max_age, refresh_after) = match freshness {
            Freshness::AfterAsking => return Need::Call(self.started + 1),
            Freshness::Within(max_age) => (Some(max_age), max_age / 2),
            Freshness::Held { refresh_after } => (None, refresh_after),
        };
        let young =
            |since: Instant| max_age.is_none_or(|m| now.saturating_duration_since(since) <= m);
        let held = self
            .cached
            .as_ref()
            .is_some_and(|c| &c.endpoint == endpoint);
        if let Some(listed) = self.listed_at.filter(|t| held && young(*t)) {
            let refresh =
                self.in_flight.is_none() && now.saturating_duration_since(listed) >= refresh_after;
            return Need::Held { refresh };
        }
        match self.in_flight {
            Some(since) if young(since) => Need::Call(self.started),
            _ => Need::Call(self.started + 1),
        }
    }

    /// How old the listing held is (from the start of the call that listed it), unless it
    /// no longer stands for the pool.
    pub fn held_age(&self, now: Instant) -> Option<Duration> {
        self.listed_at.map(|t| now.saturating_duration_since(t))
    }

    /// The listing held (with our edits merged in).
    pub fn held(&self) -> Option<Arc<PoolInventory>> {
        self.cached.as_ref().map(|c| c.inventory.clone())
    }

    /// Decides, and marks a call started at `now` when it says [`Step::Start`].
    pub fn step(&mut self, need: u64, endpoint: &AgentEndpoint, now: Instant) -> Step {
        if self.completed >= need
            && let Some(last) = &self.last
        {
            return Step::Use(last.clone());
        }
        if self.in_flight.is_some() {
            return Step::Wait;
        }
        Step::Start(self.start(endpoint, now))
    }

    /// Marks a call started; the `since` to ask it with.
    pub fn start(&mut self, endpoint: &AgentEndpoint, now: Instant) -> Option<InventoryGeneration> {
        self.in_flight = Some(now);
        self.started += 1;
        self.cached
            .as_ref()
            .filter(|c| &c.endpoint == endpoint && !self.edited)
            .map(|c| c.generation)
    }

    /// Records the end of the call in flight.
    pub fn finish(&mut self, result: Result<Cached, AgentError>) {
        let started = self.in_flight.take();
        self.completed = self.started;
        let pending = std::mem::take(&mut self.pending);
        self.last = Some(match result {
            Ok(mut c) => {
                for edit in &pending {
                    c.inventory = Arc::new(edit.apply(&c.inventory));
                }
                self.edited = !pending.is_empty();
                self.listed_at = started;
                let inv = c.inventory.clone();
                self.cached = Some(c);
                Ok(inv)
            }
            Err(e) => {
                self.listed_at = None;
                Err(Arc::new(e))
            }
        });
    }

    /// Merges an edit made through `endpoint` into the listing held.
    pub fn edit(&mut self, endpoint: &AgentEndpoint, edit: Edit) {
        match &mut self.cached {
            Some(c) if &c.endpoint == endpoint => {
                c.inventory = Arc::new(edit.apply(&c.inventory));
                self.edited = true;
            }
            _ => self.listed_at = None,
        }
        if self.in_flight.is_some() {
            self.pending.push(edit);
        }
    }

    /// The listing held no longer stands for the pool: the next request calls the agent.
    pub fn expire(&mut self) {
        self.listed_at = None;
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

    /// The pool's inventory, as fresh as `freshness` asks.
    pub async fn get(
        &self,
        agents: &Arc<dyn Agents>,
        agent: &AgentEndpoint,
        epoch: LeaderEpoch,
        pool: PoolName,
        freshness: Freshness,
    ) -> Shared {
        self.get_telling(agents, agent, epoch, pool, freshness)
            .await
            .0
    }

    /// [`Inventories::get`], and the age of the answer when it is the listing held (from a
    /// call that started before this request) rather than a call's.
    pub async fn get_telling(
        &self,
        agents: &Arc<dyn Agents>,
        agent: &AgentEndpoint,
        epoch: LeaderEpoch,
        pool: PoolName,
        freshness: Freshness,
    ) -> (Shared, Option<Duration>) {
        let slot = self.slot(&agent.node, &pool);
        let need = {
            let mut state = lock(&slot.state);
            let now = Instant::now();
            match state.need(freshness, agent, now) {
                Need::Call(n) => n,
                Need::Held { refresh } => {
                    let held = state.held();
                    let age = state.held_age(now);
                    if refresh {
                        let since = state.start(agent, now);
                        spawn_call(&slot, agents, agent, epoch, &pool, since);
                    }
                    if let Some(inventory) = held {
                        return (Ok(inventory), age);
                    }
                    state.started + 1
                }
            }
        };
        loop {
            let (step, mut done) = {
                let mut state = lock(&slot.state);
                // Subscribed under the lock: a call cannot finish unseen in between.
                (
                    state.step(need, agent, Instant::now()),
                    slot.done.subscribe(),
                )
            };
            match step {
                Step::Use(answer) => return (answer, None),
                Step::Start(since) => spawn_call(&slot, agents, agent, epoch, &pool, since),
                Step::Wait => {}
            }
            // The sender lives in `slot`, which we hold: `changed` cannot fail for lack
            // of a sender; should it, looking again is still right.
            let _ = done.changed().await;
        }
    }

    /// Merges a take or destroy the controller made through `agent` into the listing held.
    pub fn edit(&self, agent: &AgentEndpoint, pool: &PoolName, edit: Edit) {
        lock(&self.slot(&agent.node, pool).state).edit(agent, edit);
    }

    /// The listing held for the pool no longer stands for it (a command found the pool
    /// other than the listing said): the next request asks the agent.
    pub fn expire(&self, agent: &AgentEndpoint, pool: &PoolName) {
        lock(&self.slot(&agent.node, pool).state).expire();
    }
}

/// Runs the call just marked started in a task of its own: a reconcile dropped midway
/// (leadership lost) must not leave the others waiting for a call nobody finishes.
fn spawn_call(
    slot: &Arc<Slot>,
    agents: &Arc<dyn Agents>,
    agent: &AgentEndpoint,
    epoch: LeaderEpoch,
    pool: &PoolName,
    since: Option<InventoryGeneration>,
) {
    let (slot, agents, agent, pool) = (slot.clone(), agents.clone(), agent.clone(), pool.clone());
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
