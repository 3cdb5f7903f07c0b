//! The `tidepool` command. `main.rs` only calls [`run`].

#![forbid(unsafe_code)]

pub mod agent_cmd;
pub mod cli;
pub mod controller_cmd;
pub mod crdgen;
pub mod restore_cmd;
pub mod restore_store_cmd;
pub mod ssh_gate_cmd;

use anyhow::{Context, bail};

const USAGE: &str = "usage: tidepool crdgen [--check] [DIR]
       tidepool agent [FLAGS]        (tidepool agent --help lists them)
       tidepool controller [FLAGS]   (tidepool controller --help lists them)
       tidepool ssh-gate --root DATASET...  (forced command on an ssh target's host)
       tidepool restore --from-ssh USER@HOST[:PORT] --key FILE --known-hosts FILE
                        --snapshot DATASET@SNAPSHOT --to NEW_DATASET
       tidepool restore --from-store ENDPOINT --bucket B [--prefix P] --dataset SOURCE
                        [--snapshot NAME] [--identity AGE_KEY_FILE] --to NEW_DATASET
       tidepool status  [-n NS | -A] [-o json|yaml]
       tidepool nodes   [-o json|yaml]
       tidepool run-now KIND/NAME [-n NS] [--wait] [--timeout 2m]
       tidepool explain KIND/NAME [-n NS] --controller URL [--token T] [-o json|yaml]
         (these four take --kubeconfig PATH and --context NAME, as kubectl does; KIND is
          snapshotschedule (tpss) or replicationpolicy (tprp))

  crdgen    write the CustomResourceDefinitions to DIR (default: crds)
  --check   write nothing; fail if DIR differs from what would be written
  controller  run the reconciler (`tidepool controller --help`)
  status    every SnapshotSchedule and ReplicationPolicy: ready, last/next run, lag, errors
  nodes     the agents' ZfsNodes: heartbeat, endpoint, OpenZFS version, pools, capabilities
  run-now   set the manual trigger to a fresh token; --wait until the controller ran it
  explain   the dry run: what a schedule would take and destroy now, or a policy would
            send, hold, claim and destroy on its target, and why";

/// Runs the command line `args` (without the program name).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("crdgen") => {
            let mut check = false;
            let mut dir = None;
            for arg in &args[1..] {
                match arg.as_str() {
                    "--check" => check = true,
                    a if a.starts_with('-') => bail!("unknown flag {a}\n{USAGE}"),
                    a => dir = Some(a),
                }
            }
            let dir = std::path::Path::new(dir.unwrap_or("crds"));
            if check {
                let stale = crdgen::stale_files(dir).context("checking CRDs")?;
                if !stale.is_empty() {
                    bail!(
                        "CRDs in {} are stale: {}; run `cargo run -p tidepool -- crdgen`",
                        dir.display(),
                        stale.join(", ")
                    );
                }
            } else {
                crdgen::write(dir).context("writing CRDs")?;
            }
            Ok(())
        }
        Some("agent") => agent_cmd::main(&args[1..]),
        Some("controller") => controller_cmd::run(&args[1..]),
        Some("ssh-gate") => ssh_gate_cmd::main(&args[1..]),
        Some("restore") if args.iter().any(|a| a == "--from-store") => {
            restore_store_cmd::main(&args[1..])
        }
        Some("restore") => restore_cmd::main(&args[1..]),
        Some("--version" | "version") => {
            println!("tidepool {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(c @ ("status" | "nodes" | "run-now" | "explain")) => cli::run(c, &args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
