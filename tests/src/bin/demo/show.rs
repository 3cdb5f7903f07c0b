//! Printing for the demo: headings with how long a step usually takes, and commands shown
//! as a user would type them, with their output.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::zfs_vm::ZfsVm;

/// Starts a step: its title, and what it does that may take a while.
pub fn step(title: &str, expect: &str) -> Instant {
    println!("\n\x1b[1m== {title}\x1b[0m");
    if !expect.is_empty() {
        println!("   ({expect})");
    }
    Instant::now()
}

pub fn done(what: &str, since: Instant) {
    println!("   {what} in {:.1}s", since.elapsed().as_secs_f64());
}

/// Runs kubectl as the admin (the user); fails on a non-zero exit.
pub async fn kubectl(cp: &ControlPlane, args: &[&str]) -> Result<String> {
    let out = cp
        .kubectl()
        .args(args)
        .output()
        .await
        .with_context(|| format!("running kubectl {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`kubectl`], shown with its command line.
pub async fn kubectl_show(cp: &ControlPlane, args: &[&str]) -> Result<()> {
    println!("$ kubectl {}", args.join(" "));
    print!("{}", indent(&kubectl(cp, args).await?));
    Ok(())
}

/// Runs the `tidepool` CLI as the admin (the user), shown with its command line.
pub async fn tidepool_show(cp: &ControlPlane, args: &[&str]) -> Result<()> {
    let binary = tidepool_tests::agents::tidepool_binary()?;
    println!("$ tidepool {}", args.join(" "));
    let out = tokio::process::Command::new(&binary)
        .args(args)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .output()
        .await
        .with_context(|| format!("running tidepool {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "tidepool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!("{}", indent(&String::from_utf8_lossy(&out.stdout)));
    Ok(())
}

/// Runs a command in the VM (the node's shell), shown with its command line.
pub async fn node_show(vm: &ZfsVm, argv: &[&str]) -> Result<()> {
    println!("node-a$ {}", argv.join(" "));
    print!("{}", indent(&vm.exec_ok(argv.iter().copied()).await?));
    Ok(())
}

pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}
