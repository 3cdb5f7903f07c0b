//! The image builds here, with no Docker engine and nothing pulled: `scripts/build-image.sh`
//! (buildah, vfs storage, chroot isolation, a base made locally from Debian packages) puts
//! the host-built `tidepool` binary in, and the binary runs inside the image, as its
//! default non-root user and as root. The agent's zfs wrapper really runs the `zfs` of the
//! root mounted at /host (a fake host here, whose `zfs` only echoes its arguments).
//!
//! Needs root (as CI runs). A missing tool is installed by the script; a failure fails.

use std::path::Path;
use std::process::{Command, Output};

use tidepool_tests::{agents::tidepool_binary, control_plane::repo_root};

const TAG: &str = "localhost/tidepool:test";

fn cache() -> std::path::PathBuf {
    std::env::var_os("TIDEPOOL_CACHE")
        .map(Into::into)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/tidepool")))
        .unwrap_or_else(|| "/root/.cache/tidepool".into())
        .join("image")
}

/// `buildah` on the script's storage.
fn buildah(args: &[&str]) -> Output {
    let cache = cache();
    let output = Command::new("buildah")
        .arg("--root")
        .arg(cache.join("storage"))
        .arg("--runroot")
        .arg(cache.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running buildah {args:?}: {e}"));
    assert!(
        output.status.success(),
        "buildah {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A working container of the image, removed when dropped.
struct Container(String);

impl Container {
    fn new() -> Self {
        Self(stdout(&buildah(&["from", "--pull=never", TAG])))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .arg("--root")
            .arg(cache().join("storage"))
            .arg("--runroot")
            .arg(cache().join("run"))
            .args(["--storage-driver", "vfs", "rm", &self.0])
            .output();
    }
}

#[test]
fn the_image_builds_here_and_tidepool_runs_inside_it() {
    let started = std::time::Instant::now();
    let binary = tidepool_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let build = Command::new("bash")
        .arg(repo_root().join("scripts/build-image.sh"))
        .arg("--binary")
        .arg(&binary)
        .args(["--tag", TAG])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/build-image.sh: {e}"));
    assert!(
        build.status.success(),
        "scripts/build-image.sh failed ({}); its log is above",
        build.status
    );
    assert_eq!(stdout(&build), TAG);
    eprintln!("image built in {:.1?}", started.elapsed());

    let expected = format!("tidepool {}", env!("CARGO_PKG_VERSION"));
    let ctr = Container::new();
    // As the image's default user (the controller's: nonroot), then as root (the agent's).
    for user in [None, Some("0:0")] {
        let mut args = vec!["run", "--isolation", "chroot"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.extend([ctr.0.as_str(), "--", "/usr/local/bin/tidepool", "--version"]);
        assert_eq!(stdout(&buildah(&args)), expected, "as user {user:?}");
    }
    // The agent's OpenSSH client (`ssh` replication targets), with every library it links.
    let ssh = buildah(&[
        "run",
        "--isolation",
        "chroot",
        "--user",
        "0:0",
        ctr.0.as_str(),
        "--",
        "/usr/bin/ssh",
        "-V",
    ]);
    let version = String::from_utf8_lossy(&ssh.stderr);
    assert!(
        version.starts_with("OpenSSH_"),
        "ssh -V in the image: {version}"
    );
    let config = stdout(&buildah(&[
        "inspect",
        "--format",
        "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}",
        TAG,
    ]));
    assert_eq!(config, "65532:65532 [/usr/local/bin/tidepool]");

    // The zfs wrapper chroots into /host and runs the host's zfs with the agent's argv.
    let root = stdout(&buildah(&["mount", &ctr.0]));
    let fake_host = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let copy = Command::new("cp")
        .args([
            "-a",
            &format!("{root}/."),
            &fake_host.path().to_string_lossy(),
        ])
        .status()
        .unwrap_or_else(|e| panic!("cp: {e}"));
    assert!(copy.success(), "copying the image's root for a fake host");
    buildah(&["umount", &ctr.0]);
    let fake_zfs = fake_host.path().join("usr/sbin/zfs");
    std::fs::write(&fake_zfs, "#!/bin/sh\necho \"host zfs: $*\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let chmod = Command::new("chmod")
        .arg("755")
        .arg(&fake_zfs)
        .status()
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    assert!(chmod.success());
    let volume = format!("{}:/host:ro", fake_host.path().display());
    let ran = buildah(&[
        "run",
        "--isolation",
        "chroot",
        "--user",
        "0:0",
        "--volume",
        &volume,
        &ctr.0,
        "--",
        "/usr/local/lib/tidepool/host-zfs/zfs",
        "list",
        "-H",
        "-p",
    ]);
    assert_eq!(stdout(&ran), "host zfs: list -H -p");
    eprintln!("image test done in {:.1?}", started.elapsed());
}
