//! The tests' control plane (etcd + kube-apiserver, CRDs from `crds/` installed), brought
//! up for a person:
//!
//! ```text
//! control-plane up            # stays in the foreground until Ctrl-C
//! control-plane up --detach   # keeps running in the background; prints KUBECONFIG
//! control-plane down          # stops the detached one
//! control-plane status
//! ```
//!
//! Usually run as `tests/control-plane/up` (a wrapper around `cargo run`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tidepool_tests::control_plane::{ControlPlane, repo_root};

const USAGE: &str = "usage: control-plane up [--detach] | down | status";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["up"] => up(None).await,
        ["up", "--detach"] => detach().await,
        // Internal: the background half of `up --detach`.
        ["serve"] => up(Some(&state_dir())).await,
        ["down"] => down(),
        ["status"] => status(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where a detached control plane keeps its pid, log and a stable kubeconfig path
/// (`TIDEPOOL_CONTROL_PLANE_STATE` overrides it, e.g. for a test).
fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TIDEPOOL_CONTROL_PLANE_STATE") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("TIDEPOOL_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
            Path::new(&home).join(".cache/tidepool")
        },
        PathBuf::from,
    );
    cache.join("control-plane/up")
}

/// Runs the control plane until Ctrl-C or SIGTERM. With a state dir (detached mode) it
/// records its pid and a copy of the kubeconfig there and removes them on the way out.
async fn up(state: Option<&Path>) -> Result<()> {
    let cp = ControlPlane::start().await?;
    let crds = repo_root().join("crds");
    match cp.install_crds(&crds).await {
        Ok(names) => eprintln!("installed CRDs: {}", names.join(", ")),
        Err(e) => eprintln!("warning: CRDs from {} not installed: {e:#}", crds.display()),
    }
    let kubeconfig = match state {
        Some(state) => {
            let stable = state.join("kubeconfig");
            fs::copy(cp.kubeconfig_path(), &stable)?;
            fs::write(state.join("pid"), std::process::id().to_string())?;
            stable
        }
        None => cp.kubeconfig_path().to_path_buf(),
    };
    eprintln!(
        "control plane {} ready in {:.1?}\n  binaries: {}\n  logs:     {}",
        cp.server(),
        cp.started_in(),
        cp.binaries().dir().display(),
        cp.dir().display()
    );
    println!("kubeconfig: {}", kubeconfig.display());
    println!("export KUBECONFIG={}", kubeconfig.display());
    if state.is_none() {
        eprintln!("press Ctrl-C to stop");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping the control plane");
    drop(cp);
    if let Some(state) = state {
        let _ = fs::remove_file(state.join("pid"));
        let _ = fs::remove_file(state.join("kubeconfig"));
    }
    Ok(())
}

fn running_pid(state: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(state.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new("/proc")
        .join(pid.to_string())
        .exists()
        .then_some(pid)
}

/// Starts `serve` in its own session (so closing the terminal does not stop it) and
/// returns once it is ready.
async fn detach() -> Result<()> {
    let state = state_dir();
    fs::create_dir_all(&state)?;
    if let Some(pid) = running_pid(&state) {
        println!("already running (pid {pid})");
        println!("export KUBECONFIG={}", state.join("kubeconfig").display());
        return Ok(());
    }
    let _ = fs::remove_file(state.join("pid"));
    let log_path = state.join("log");
    let log = fs::File::create(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new("setsid")
        .arg(exe)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the background control plane with setsid")?;
    eprintln!(
        "starting in the background (log: {}); a cold build takes 10-20 min",
        log_path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(40 * 60);
    loop {
        if running_pid(&state).is_some() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the background control plane exited ({status}):\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the background control plane did not become ready; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kubeconfig = state.join("kubeconfig");
    println!("kubeconfig: {}", kubeconfig.display());
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!("stop it with: tests/control-plane/up down");
    Ok(())
}

fn down() -> Result<()> {
    let state = state_dir();
    let Some(pid) = running_pid(&state) else {
        println!("no detached control plane is running");
        return Ok(());
    };
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -TERM {pid} failed ({status})");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new("/proc").join(pid.to_string()).exists() {
        if Instant::now() > deadline {
            bail!("pid {pid} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopped (pid {pid})");
    Ok(())
}

fn status() -> Result<()> {
    let state = state_dir();
    match running_pid(&state) {
        Some(pid) => {
            println!("running (pid {pid})");
            println!("export KUBECONFIG={}", state.join("kubeconfig").display());
        }
        None => println!("not running"),
    }
    Ok(())
}
