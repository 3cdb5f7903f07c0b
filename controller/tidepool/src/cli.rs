//! The day-2 commands, with kubectl's conventions: `status`, `nodes`, `run-now`,
//! `explain`. Each reads the cluster through the user's kubeconfig (`--kubeconfig`,
//! `KUBECONFIG`, `~/.kube/config`; `--context`), takes `-n`/`-A` where objects are
//! namespaced, prints a table by default and `-o json|yaml` on request.

mod common;
mod explain;
mod format;
mod nodes;
mod run_now;
mod status;
mod target;

pub use common::{Common, Output};

/// Runs `tidepool <command> args...` for one of the commands above.
pub fn run(command: &str, args: &[String]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            "status" => status::run(args).await,
            "nodes" => nodes::run(args).await,
            "run-now" => run_now::run(args).await,
            "explain" => explain::run(args).await,
            other => anyhow::bail!("unknown command {other}"),
        }
    })
}
