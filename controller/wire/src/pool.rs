//! What an agent reports of one pool: health, space, what the pool can do, and the
//! inventories of its datasets.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tidepool_api::{PoolCapabilities, PoolName};

use crate::inventory::DatasetInventory;

/// Pool health as `zpool list` prints it (`health` column).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PoolHealth {
    Online,
    Degraded,
    Faulted,
    Offline,
    Unavail,
    Removed,
    Suspended,
    /// A state this version does not know (a newer OpenZFS), kept as printed.
    Other(String),
}

impl PoolHealth {
    /// Reads the `health` column; never fails, so a new state cannot break a listing.
    pub fn from_zpool(s: &str) -> PoolHealth {
        match s {
            "ONLINE" => PoolHealth::Online,
            "DEGRADED" => PoolHealth::Degraded,
            "FAULTED" => PoolHealth::Faulted,
            "OFFLINE" => PoolHealth::Offline,
            "UNAVAIL" => PoolHealth::Unavail,
            "REMOVED" => PoolHealth::Removed,
            "SUSPENDED" => PoolHealth::Suspended,
            other => PoolHealth::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            PoolHealth::Online => "ONLINE",
            PoolHealth::Degraded => "DEGRADED",
            PoolHealth::Faulted => "FAULTED",
            PoolHealth::Offline => "OFFLINE",
            PoolHealth::Unavail => "UNAVAIL",
            PoolHealth::Removed => "REMOVED",
            PoolHealth::Suspended => "SUSPENDED",
            PoolHealth::Other(s) => s,
        }
    }

    /// Whether writes (snapshots, receives, destroys) can be expected to work.
    pub fn is_writable(&self) -> bool {
        matches!(self, PoolHealth::Online | PoolHealth::Degraded)
    }
}

impl fmt::Display for PoolHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// On the wire the state is the word zpool prints, so a newer agent's new state decodes
// as `Other` instead of failing the whole inventory.
impl Serialize for PoolHealth {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PoolHealth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(PoolHealth::from_zpool(&s))
    }
}

/// One pool on one node and every dataset in it, as one agent saw them at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolInventory {
    pub pool: PoolName,
    pub health: PoolHealth,
    pub size_bytes: u64,
    pub allocated_bytes: u64,
    pub free_bytes: u64,
    /// The pool's features: what it can receive and keep.
    #[serde(default)]
    pub capabilities: PoolCapabilities,
    /// Every filesystem and volume of the pool whose name Tidepool can spell, with its
    /// snapshots and bookmarks.
    #[serde(default)]
    pub datasets: Vec<DatasetInventory>,
    /// Filesystems and volumes whose names Tidepool's strict names refuse (OpenZFS allows
    /// spaces, for example). Tidepool never acts on them; they are counted so that the
    /// status can say some were left out.
    #[serde(default)]
    pub unnamed_datasets: u64,
}

impl PoolInventory {
    pub fn dataset(&self, name: &tidepool_api::DatasetName) -> Option<&DatasetInventory> {
        self.datasets.iter().find(|d| &d.dataset == name)
    }
}
