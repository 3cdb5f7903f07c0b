//! `tidepool agent` configuration: flags, each with an environment variable the chart's
//! DaemonSet sets (a flag wins over its variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tidepool_agent::{DEFAULT_AUDIENCE, DatasetRoots, ServiceAccountRef};
use tidepool_api::{DatasetName, HumanDuration, PoolName};

pub const USAGE: &str = "usage: tidepool agent [FLAGS]

  --node-name NAME                 the node served (env NODE_NAME, from the downward API)
  --dataset-root DATASET           a dataset root the agent may act on; repeat, or
                                   TIDEPOOL_DATASET_ROOTS=a,b (none: nothing is permitted)
  --pool POOL                      a pool to publish; repeat, or TIDEPOOL_POOLS=a,b
                                   (default: the pools of the dataset roots)
  --listen ADDR                    the API's TLS address (TIDEPOOL_AGENT_LISTEN, 0.0.0.0:7443)
  --advertise HOST:PORT            the endpoint published in ZfsNode (TIDEPOOL_AGENT_ENDPOINT;
                                   default POD_IP and the listen port)
  --controller-service-account NS/NAME
                                   the only caller admitted (TIDEPOOL_CONTROLLER_SA)
  --audience AUD                   token audience (TIDEPOOL_AGENT_AUDIENCE, tidepool-agent)
  --kubeconfig PATH                (KUBECONFIG; default: in-cluster configuration)
  --metrics-listen ADDR            plain HTTP /metrics /healthz /readyz
                                   (TIDEPOOL_METRICS_LISTEN, 0.0.0.0:9090)
  --heartbeat DURATION             ZfsNode heartbeat interval (TIDEPOOL_HEARTBEAT, 1m)
  --zfs-bin-dir DIR                where zfs and zpool are (TIDEPOOL_ZFS_BIN_DIR; default: PATH)
  --snapshots-by ioctl|command     take snapshots through libzfs_core from the agent's own
                                   process (ioctl: no zfs process start; falls back to the
                                   command when the library is absent) or with `zfs snapshot`
                                   (TIDEPOOL_SNAPSHOTS_BY; default ioctl, command when
                                   --zfs-bin-dir is given)";

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} is required")]
    Missing { flag: &'static str },
    #[error("unknown flag {0}")]
    UnknownFlag(String),
    #[error("{flag} needs a value")]
    NoValue { flag: String },
    #[error("{flag}: {value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// Everything `tidepool agent` runs with.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub node_name: String,
    pub roots: DatasetRoots,
    pub pools: Vec<PoolName>,
    pub listen: SocketAddr,
    pub endpoint: String,
    pub controller: ServiceAccountRef,
    pub audience: String,
    pub kubeconfig: Option<PathBuf>,
    pub metrics_listen: SocketAddr,
    pub heartbeat: Duration,
    pub zfs_bin_dir: Option<PathBuf>,
    /// Take snapshots through libzfs_core (`tidepool_lzc`) rather than `zfs snapshot`.
    pub snapshots_by_ioctl: bool,
}

fn invalid(flag: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

fn list(values: &[String]) -> impl Iterator<Item = &str> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl AgentSettings {
    /// Reads `args` (after `agent`), falling back to `env` for each unset flag.
    pub fn parse(
        args: &[String],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut flags: Vec<(&'static str, String)> = Vec::new();
        const NAMES: &[&str] = &[
            "--node-name",
            "--dataset-root",
            "--pool",
            "--listen",
            "--advertise",
            "--controller-service-account",
            "--audience",
            "--kubeconfig",
            "--metrics-listen",
            "--heartbeat",
            "--zfs-bin-dir",
            "--snapshots-by",
        ];
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (arg.as_str(), None),
            };
            let flag = NAMES
                .iter()
                .find(|n| **n == name)
                .ok_or_else(|| ConfigError::UnknownFlag(arg.clone()))?;
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| ConfigError::NoValue { flag: arg.clone() })?,
            };
            flags.push((flag, value));
        }
        let all = |flag: &str, var: &str| -> Vec<String> {
            let given: Vec<String> = flags
                .iter()
                .filter(|(f, _)| *f == flag)
                .map(|(_, v)| v.clone())
                .collect();
            if given.is_empty() {
                env(var).into_iter().collect()
            } else {
                given
            }
        };
        let one = |flag: &str, var: &str| all(flag, var).pop();

        let node_name = one("--node-name", "NODE_NAME")
            .filter(|n| !n.is_empty())
            .ok_or(ConfigError::Missing {
                flag: "--node-name",
            })?;
        let roots = list(&all("--dataset-root", "TIDEPOOL_DATASET_ROOTS"))
            .map(|r| {
                r.parse::<DatasetName>()
                    .map_err(|e| invalid("--dataset-root", r, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut pools = list(&all("--pool", "TIDEPOOL_POOLS"))
            .map(|p| p.parse::<PoolName>().map_err(|e| invalid("--pool", p, e)))
            .collect::<Result<Vec<_>, _>>()?;
        if pools.is_empty() {
            pools = roots.iter().map(DatasetName::pool).collect();
        }
        pools.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        pools.dedup();

        let listen_text =
            one("--listen", "TIDEPOOL_AGENT_LISTEN").unwrap_or_else(|| "0.0.0.0:7443".into());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|e| invalid("--listen", &listen_text, e))?;
        let endpoint = match one("--advertise", "TIDEPOOL_AGENT_ENDPOINT") {
            Some(e) => e,
            None => match env("POD_IP") {
                Some(ip) if ip.contains(':') => format!("[{ip}]:{}", listen.port()),
                Some(ip) => format!("{ip}:{}", listen.port()),
                None => {
                    return Err(ConfigError::Missing {
                        flag: "--advertise",
                    });
                }
            },
        };
        let sa = one("--controller-service-account", "TIDEPOOL_CONTROLLER_SA").ok_or(
            ConfigError::Missing {
                flag: "--controller-service-account",
            },
        )?;
        let controller = match sa.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                ServiceAccountRef {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                }
            }
            _ => {
                return Err(invalid(
                    "--controller-service-account",
                    &sa,
                    "expected NAMESPACE/NAME",
                ));
            }
        };
        let audience =
            one("--audience", "TIDEPOOL_AGENT_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.into());
        let metrics_text = one("--metrics-listen", "TIDEPOOL_METRICS_LISTEN")
            .unwrap_or_else(|| "0.0.0.0:9090".into());
        let metrics_listen: SocketAddr = metrics_text
            .parse()
            .map_err(|e| invalid("--metrics-listen", &metrics_text, e))?;
        let heartbeat_text =
            one("--heartbeat", "TIDEPOOL_HEARTBEAT").unwrap_or_else(|| "1m".into());
        let heartbeat = heartbeat_text
            .parse::<HumanDuration>()
            .map_err(|e| invalid("--heartbeat", &heartbeat_text, e))?
            .as_std();
        let zfs_bin_dir = one("--zfs-bin-dir", "TIDEPOOL_ZFS_BIN_DIR").map(PathBuf::from);
        // A chosen zfs binary may be another OpenZFS than the system's libzfs_core.
        let by_default = if zfs_bin_dir.is_some() {
            "command"
        } else {
            "ioctl"
        };
        let snapshots_by = one("--snapshots-by", "TIDEPOOL_SNAPSHOTS_BY");
        let snapshots_by_ioctl = match snapshots_by.as_deref().unwrap_or(by_default) {
            "ioctl" => true,
            "command" => false,
            other => {
                return Err(invalid(
                    "--snapshots-by",
                    other,
                    "expected ioctl or command",
                ));
            }
        };
        Ok(Self {
            node_name,
            roots: DatasetRoots::new(roots),
            pools,
            listen,
            endpoint,
            controller,
            audience,
            kubeconfig: one("--kubeconfig", "KUBECONFIG").map(PathBuf::from),
            metrics_listen,
            heartbeat,
            zfs_bin_dir,
            snapshots_by_ioctl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parse(a: &[&str], env: &[(&str, &str)]) -> Result<AgentSettings, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AgentSettings::parse(&args(a), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn flags_win_over_the_environment() {
        let s = parse(
            &[
                "--node-name",
                "node-a",
                "--dataset-root=tank/apps",
                "--dataset-root",
                "fast/db",
                "--controller-service-account",
                "tidepool/controller",
            ],
            &[
                ("NODE_NAME", "other"),
                ("POD_IP", "10.1.2.3"),
                ("TIDEPOOL_DATASET_ROOTS", "ignored/x"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.node_name, "node-a");
        assert_eq!(s.roots.as_slice().len(), 2);
        let pools: Vec<&str> = s.pools.iter().map(PoolName::as_str).collect();
        assert_eq!(pools, ["fast", "tank"]);
        assert_eq!(s.endpoint, "10.1.2.3:7443");
        assert_eq!(s.controller.namespace, "tidepool");
        assert_eq!(s.heartbeat, Duration::from_secs(60));
    }

    #[test]
    fn the_environment_alone_configures_a_daemonset_pod() {
        let s = parse(
            &[],
            &[
                ("NODE_NAME", "node-b"),
                ("TIDEPOOL_DATASET_ROOTS", "tank/a, tank/b"),
                ("TIDEPOOL_AGENT_ENDPOINT", "127.0.0.1:4000"),
                ("TIDEPOOL_CONTROLLER_SA", "ns/ctl"),
                ("TIDEPOOL_HEARTBEAT", "5s"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.roots.as_slice().len(), 2);
        assert_eq!(s.endpoint, "127.0.0.1:4000");
        assert_eq!(s.heartbeat, Duration::from_secs(5));
    }

    #[test]
    fn bad_input_is_refused_with_the_flag() {
        let base = [("NODE_NAME", "n"), ("POD_IP", "10.0.0.1")];
        let e = parse(&["--dataset-root", "tank/../x"], &base).err();
        assert!(matches!(
            e,
            Some(ConfigError::Invalid {
                flag: "--dataset-root",
                ..
            })
        ));
        let e = parse(&["--controller-service-account", "nons"], &base).err();
        assert!(matches!(e, Some(ConfigError::Invalid { .. })));
        let e = parse(&["--bogus", "1"], &base).err();
        assert!(matches!(e, Some(ConfigError::UnknownFlag(_))));
        let e = parse(
            &["--controller-service-account", "a/b"],
            &[("POD_IP", "1.2.3.4")],
        )
        .err();
        assert!(matches!(
            e,
            Some(ConfigError::Missing {
                flag: "--node-name"
            })
        ));
    }

    #[test]
    fn snapshots_go_by_ioctl_unless_told_or_another_zfs_is_chosen() {
        let base = [
            ("NODE_NAME", "n"),
            ("POD_IP", "10.0.0.1"),
            ("TIDEPOOL_CONTROLLER_SA", "ns/ctl"),
        ];
        let by = |a: &[&str]| parse(a, &base).map(|s| s.snapshots_by_ioctl);
        let ioctl = |a: &[&str]| by(a).unwrap_or_else(|e| panic!("{e}"));
        assert!(ioctl(&[]));
        assert!(!ioctl(&["--snapshots-by", "command"]));
        assert!(!ioctl(&["--zfs-bin-dir", "/opt/zfs/bin"]));
        assert!(ioctl(&[
            "--zfs-bin-dir",
            "/opt/zfs/bin",
            "--snapshots-by=ioctl"
        ]));
        assert!(matches!(
            by(&["--snapshots-by", "sometimes"]),
            Err(ConfigError::Invalid {
                flag: "--snapshots-by",
                ..
            })
        ));
    }
}
