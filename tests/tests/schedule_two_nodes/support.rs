//! The parts of `schedule_two_nodes` that are not the scenario: the two sites, the slots
//! seen over the run, the Lease's holder, the pool both nodes get.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tidepool_tests::agents::GuestAgent;
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::release::ok;
use tidepool_tests::snapshots::{assert_atomic_named_owned, owned_whole, slot_time};
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_wire::operation::{Owner, TakeSnapshots};
use tokio::time::Instant;

use super::{POOL, ROOT, SCHEDULE};

/// The datasets the schedule covers: `app1` recursively without `app1/scratch`, `app2`.
pub fn covered() -> BTreeSet<String> {
    ["app1", "app1/db", "app2"]
        .iter()
        .map(|d| format!("{ROOT}/{d}"))
        .collect()
}

/// One node: its VM, its agent.
pub struct Site {
    pub node: String,
    pub vm: ZfsVm,
    pub agent: Option<GuestAgent>,
}

/// Every slot seen on each node (short name → createtxg and when it was first seen),
/// gathered over the run from listings in which retention may already have pruned some.
#[derive(Default)]
pub struct Seen {
    by_node: BTreeMap<String, BTreeMap<String, (u64, Instant)>>,
}

impl Seen {
    /// Reads both nodes once; every whole set must be atomic, named and owned, and a name
    /// seen again must have the createtxg it had (not taken a second time).
    pub async fn read(&mut self, sites: &[Site], owner: &str) {
        for s in sites {
            let owned = owned_whole(&s.vm, &s.node, ROOT, owner, covered().len()).await;
            assert_atomic_named_owned(&s.node, &covered(), SCHEDULE, owner, &owned);
            let seen = self.by_node.entry(s.node.clone()).or_default();
            for (short, snaps) in &owned {
                let txg = snaps[0].createtxg;
                let (first_txg, _) = *seen
                    .entry(short.clone())
                    .or_insert_with(|| (txg, Instant::now()));
                assert_eq!(first_txg, txg, "{} {short} was taken twice", s.node);
            }
        }
    }

    /// The createtxg of each slot on `node`, in slot order.
    pub fn txgs_in_slot_order(&self, node: &str) -> Vec<u64> {
        let mut v: Vec<_> = self
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .map(|(short, (txg, _))| (slot_time(short, SCHEDULE), *txg))
            .collect();
        v.sort();
        v.into_iter().map(|(_, txg)| txg).collect()
    }

    pub fn count(&self, node: &str) -> usize {
        self.by_node.get(node).map_or(0, BTreeMap::len)
    }

    /// Slot times on `node`, oldest first.
    pub fn slots(&self, node: &str) -> Vec<(jiff::Timestamp, Instant)> {
        let mut v: Vec<_> = self
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .map(|(short, (_, at))| (slot_time(short, SCHEDULE), *at))
            .collect();
        v.sort();
        v
    }
}

pub async fn lease_holder(cp: &ControlPlane, ns: &str, name: &str) -> (Option<String>, i32) {
    let lease = Api::<Lease>::namespaced(cp.admin_client(), ns)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(-1))
}

/// A pool like a node's: `tank/data/{app1,app1/db,app1/scratch,app2}`.
pub async fn prepare(vm: &ZfsVm) {
    ok(vm.create_pool(POOL, 512 << 20).await);
    for d in ["app1/db", "app1/scratch", "app2"] {
        ok(vm
            .exec_ok(["zfs", "create", "-p", &format!("{ROOT}/{d}")])
            .await);
    }
}

pub fn stale_take(owner: &str) -> TakeSnapshots {
    TakeSnapshots {
        datasets: vec![
            format!("{ROOT}/app2")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        ],
        short_name: "tidepool_20261201T000000Z_stale"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
        owner: owner.parse::<Owner>().unwrap_or_else(|e| panic!("{e}")),
        slot: None,
    }
}
