//! `KIND/NAME` as kubectl takes it: `snapshotschedule/db`, `tpss/db`, `rp/db-to-b`.

use anyhow::bail;

/// The two kinds the commands act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SnapshotSchedule,
    ReplicationPolicy,
}

impl Kind {
    /// The resource (plural) name, as in RBAC and URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Self::SnapshotSchedule => "snapshotschedules",
            Self::ReplicationPolicy => "replicationpolicies",
        }
    }

    /// The singular lower-case name, as kubectl prints `kind/name`.
    pub fn singular(self) -> &'static str {
        match self {
            Self::SnapshotSchedule => "snapshotschedule",
            Self::ReplicationPolicy => "replicationpolicy",
        }
    }
}

/// `KIND/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.singular(), self.name)
    }
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let Some((kind, name)) = s.split_once('/') else {
            bail!("{s:?}: expected KIND/NAME, e.g. snapshotschedule/db-hourly");
        };
        let kind = match kind.to_ascii_lowercase().trim_end_matches(".tidepool.dev") {
            "snapshotschedule" | "snapshotschedules" | "tpss" => Kind::SnapshotSchedule,
            "replicationpolicy" | "replicationpolicies" | "tprp" | "rp" => Kind::ReplicationPolicy,
            other => {
                bail!("unknown kind {other:?}: snapshotschedule (tpss) or replicationpolicy (tprp)")
            }
        };
        if name.is_empty() || name.contains('/') {
            bail!("{s:?}: expected KIND/NAME");
        }
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kinds_by_every_name_kubectl_knows() {
        for s in [
            "snapshotschedule/db",
            "SnapshotSchedules/db",
            "tpss/db",
            "snapshotschedules.tidepool.dev/db",
        ] {
            let t: Target = s.parse().unwrap();
            assert_eq!((t.kind, t.name.as_str()), (Kind::SnapshotSchedule, "db"));
        }
        let t: Target = "tprp/x".parse().unwrap();
        assert_eq!(t.kind, Kind::ReplicationPolicy);
        assert_eq!(t.to_string(), "replicationpolicy/x");
        for bad in ["db", "pods/db", "tpss/", "tpss/a/b"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
