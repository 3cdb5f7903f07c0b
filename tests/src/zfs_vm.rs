//! Real OpenZFS 2.3 in a QEMU (TCG) VM for tests.
//!
//! The image (Debian bookworm, backports kernel, zfs-dkms built for it) is built once by
//! `tests/zfs-vm/build-image.sh` and cached under `${TIDEPOOL_CACHE:-~/.cache/tidepool}/zfs-vm/`;
//! [`ZfsVm::boot`] runs that script itself, so a plain `cargo test` works on a fresh machine
//! (the first run takes about 10 minutes). Each boot starts from the pristine image (qemu
//! `snapshot=on`: writes go to a temporary overlay that qemu deletes).
//!
//! # API
//!
//! ```text
//! use tidepool_tests::zfs_vm::{ZfsVm, VmConfig, Remote, RemoteCommand, RemoteChild, Output, ExitStatus};
//!
//! // One VM per test binary, shared by its tests (booted by the first caller):
//! let vm: &'static ZfsVm = ZfsVm::shared().await?;
//! // Or a private one (killed on drop): ZfsVm::boot().await? / ZfsVm::boot_with(VmConfig { .. }).await?
//!
//! let out: Output = vm.exec(["zfs", "version"]).await?;      // {status, stdout, stderr}
//! let text: String = vm.exec_ok(["zpool", "list"]).await?;   // Err(argv, status, stderr) unless exit 0
//! let pool: Pool = vm.create_pool("tank", 512 << 20).await?; // file vdev in /var/tmp/tidepool
//! let name: String = vm.unique_pool_name("src");             // "src<N>", unique within this process
//! vm.destroy_pool("tank").await?;
//!
//! let mut child: RemoteChild = vm.spawn(["zfs", "send", "tank/a@1"]).await?;
//! // child.stdin: Option<RemoteStdin> (AsyncWrite), child.stdout / child.stderr:
//! // Option<RemoteOutput> (AsyncRead); child.wait().await? -> ExitStatus; child.kill().await?;
//! // child.signal(15); child.wait_with_output().await? -> Output. Dropping a RemoteChild
//! // SIGKILLs its process group in the guest.
//!
//! // Builder, like tokio::process::Command (argv exactly as given, never a shell):
//! let out = vm.command(["zfs", "list"]).env("K", "V").current_dir("/tmp").output().await?;
//! // .spawn(), .output(), .output_with_stdin(&bytes), .output_ok() -> stdout String
//! let remote: Remote = vm.remote(); // 'static + Clone handle: remote.command(argv)...
//!
//! // Network: guest ports forwarded to 127.0.0.1 on the host.
//! let host_port: u16 = vm.forwarded_port(ZfsVm::AGENT_PORTS[0]).unwrap();
//! // From the guest, the host's loopback is ZfsVm::HOST_FROM_GUEST (qemu user networking).
//!
//! // Host share (read-only 9p): by default the cargo target dir, at /host in the guest.
//! let guest_bin = vm.guest_path(&host_target_dir.join("debug/tidepool")); // Some("/host/debug/tidepool")
//! vm.console_log();  // serial console file (kernel, init and exec-server messages)
//! vm.boot_time();    // qemu start -> exec server answering
//! ```
//!
//! Debugging: `TIDEPOOL_VM_KERNEL_ARGS=loglevel=7` adds kernel arguments (the kernel log then
//! lands in the console log); `TIDEPOOL_CACHE` moves the image cache.
//!
//! # Lifetime
//!
//! qemu runs under a small bash watchdog whose stdin is a pipe from the test process; the
//! pipe reaches EOF only when the test process is gone (normal exit, panic, SIGKILL), and
//! then the watchdog kills qemu. That matters for [`ZfsVm::shared`]: a static is never
//! dropped, and `PR_SET_PDEATHSIG` would fire when the *thread* that spawned qemu exits
//! (a tokio test's runtime thread), not the process. A dropped [`ZfsVm`] closes the pipe
//! itself and waits for qemu to go.

mod remote;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::OnceCell;

pub use remote::{
    ExitStatus, Hello, Output, Remote, RemoteChild, RemoteCommand, RemoteOutput, RemoteStdin,
};

/// Directory with `build-image.sh` and the guest files.
fn vm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("zfs-vm")
}

/// The workspace's cargo target directory (where freshly built Tidepool binaries are).
pub fn host_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// How to boot a VM. `Default` is what [`ZfsVm::boot`] and [`ZfsVm::shared`] use.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub memory_mib: u32,
    pub cpus: u32,
    /// Host directory shared read-only at [`ZfsVm::GUEST_SHARE`]; default: the cargo target dir.
    pub host_share: Option<PathBuf>,
    /// Guest TCP ports forwarded to free ports on the host's 127.0.0.1 (besides the exec
    /// server's); default [`ZfsVm::AGENT_PORTS`].
    pub forward_ports: Vec<u16>,
    /// From qemu start until the exec server answers.
    pub boot_timeout: Duration,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            memory_mib: 3072,
            cpus: 2,
            host_share: Some(host_target_dir()),
            forward_ports: ZfsVm::AGENT_PORTS.to_vec(),
            boot_timeout: Duration::from_secs(300),
        }
    }
}

/// A pool created by [`ZfsVm::create_pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    /// The file vdev inside the guest.
    pub vdev: String,
    pub size: u64,
}

/// A booted VM with OpenZFS. Dropping it kills qemu.
#[derive(Debug)]
pub struct ZfsVm {
    qemu: Option<Child>,
    lifeline: Option<ChildStdin>,
    run_dir: PathBuf,
    keep_run_dir: bool,
    console_log: PathBuf,
    remote: Remote,
    ports: Vec<(u16, u16)>,
    share: Option<(PathBuf, PathBuf)>,
    boot_time: Duration,
    image_dir: PathBuf,
    kernel_release: String,
}

static SHARED: OnceCell<std::result::Result<ZfsVm, String>> = OnceCell::const_new();
static POOL_COUNTER: AtomicU32 = AtomicU32::new(0);
static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

impl ZfsVm {
    /// Guest port of the exec server.
    pub const EXEC_PORT: u16 = 7000;
    /// Guest ports forwarded by default, for agents that tests run inside the VM.
    pub const AGENT_PORTS: [u16; 4] = [7001, 7002, 7003, 7004];
    /// Where the host share appears in the guest.
    pub const GUEST_SHARE: &'static str = "/host";
    /// The host's 127.0.0.1 as the guest reaches it (qemu user-mode networking).
    pub const HOST_FROM_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    /// Directory in the guest that holds pool vdev files.
    pub const VDEV_DIR: &'static str = "/var/tmp/tidepool";

    /// The VM of this test binary, booted by the first caller and shared by all tests.
    /// A failed boot is remembered: every caller gets the same error, none boots again.
    pub async fn shared() -> Result<&'static ZfsVm> {
        let vm = SHARED
            .get_or_init(|| async {
                match ZfsVm::boot().await {
                    Ok(mut vm) => {
                        // The process ends without dropping statics; keep its logs.
                        vm.keep_run_dir = true;
                        Ok(vm)
                    }
                    Err(e) => Err(format!("{e:#}")),
                }
            })
            .await;
        vm.as_ref()
            .map_err(|e| anyhow!("the shared ZFS VM failed to boot: {e}"))
    }

    /// Builds the image if needed and boots a private VM with [`VmConfig::default`].
    pub async fn boot() -> Result<ZfsVm> {
        Self::boot_with(VmConfig::default()).await
    }

    pub async fn boot_with(config: VmConfig) -> Result<ZfsVm> {
        let image_dir = build_image().await?;
        clean_stale_run_dirs();
        let mut last_err = None;
        // A forwarded port picked as free can be taken before qemu binds it; retry then.
        for _ in 0..3 {
            match Self::launch(&config, &image_dir).await {
                Ok(vm) => return Ok(vm),
                Err(LaunchError::PortTaken(e)) => last_err = Some(e),
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("qemu did not start")))
    }

    async fn launch(
        config: &VmConfig,
        image_dir: &Path,
    ) -> std::result::Result<ZfsVm, LaunchError> {
        let run_dir = std::env::temp_dir().join(format!(
            "tidepool-zfs-vm-{}-{}",
            std::process::id(),
            RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let console_log = run_dir.join("console.log");
        let qemu_log = run_dir.join("qemu.log");

        let mut guest_ports = vec![Self::EXEC_PORT];
        guest_ports.extend(config.forward_ports.iter().copied());
        let host_ports = free_ports(guest_ports.len())?;
        let ports: Vec<(u16, u16)> = guest_ports.into_iter().zip(host_ports).collect();
        let hostfwd: String = ports
            .iter()
            .map(|(guest, host)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"))
            .collect();

        let kernel_release = std::fs::read_to_string(image_dir.join("manifest"))
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("kernel=").map(str::to_owned))
            })
            .unwrap_or_default();
        // mitigations=off: a test VM; page-table isolation costs every syscall a TLB flush,
        // which TCG pays dearly for.
        let mut append = format!(
            "root=/dev/vda rw console=ttyS0 loglevel=4 init=/sbin/tidepool-init panic=-1 \
             mitigations=off tidepool.exec_port={}",
            Self::EXEC_PORT
        );
        if let Ok(extra) = std::env::var("TIDEPOOL_VM_KERNEL_ARGS") {
            append.push(' ');
            append.push_str(&extra);
        }
        let share = match &config.host_share {
            Some(dir) => {
                let dir = dir
                    .canonicalize()
                    .with_context(|| format!("host share {}", dir.display()))?;
                append.push_str(" tidepool.host_share=1");
                Some((dir, PathBuf::from(Self::GUEST_SHARE)))
            }
            None => None,
        };

        let mut args: Vec<String> = vec![
            "-name".into(),
            "tidepool-zfs-vm".into(),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-no-reboot".into(),
            // Nested KVM fails on these machines (see shared/INFRA.md): TCG only.
            "-accel".into(),
            "tcg,thread=multi".into(),
            "-cpu".into(),
            "max".into(),
            "-m".into(),
            config.memory_mib.to_string(),
            "-smp".into(),
            config.cpus.to_string(),
            "-kernel".into(),
            path_arg(&image_dir.join("vmlinuz"))?,
            "-initrd".into(),
            path_arg(&image_dir.join("initrd.img"))?,
            "-append".into(),
            append,
            // snapshot=on: every boot starts from the pristine cached image.
            "-drive".into(),
            format!(
                "file={},if=virtio,format=raw,snapshot=on,cache=unsafe",
                qemu_opt(&path_arg(&image_dir.join("root.img"))?)
            ),
            "-virtfs".into(),
            format!(
                "local,path={},mount_tag=tidepool-guest,security_model=none,readonly=on",
                qemu_opt(&path_arg(&vm_dir().join("guest"))?)
            ),
            "-netdev".into(),
            format!("user,id=n0{hostfwd}"),
            "-device".into(),
            "virtio-net-pci,netdev=n0,romfile=".into(),
            "-device".into(),
            "virtio-rng-pci".into(),
            "-serial".into(),
            format!("file:{}", path_arg(&console_log)?),
        ];
        if let Some((host, _)) = &share {
            args.push("-virtfs".into());
            args.push(format!(
                "local,path={},mount_tag=tidepool-host,security_model=none,readonly=on",
                qemu_opt(&path_arg(host)?)
            ));
        }

        let log_file = std::fs::File::create(&qemu_log)
            .with_context(|| format!("creating {}", qemu_log.display()))?;
        let started = Instant::now();
        // The watchdog: see "Lifetime" in the module doc. qemu gets /dev/null as stdin so
        // only the watchdog holds the lifeline pipe.
        let mut qemu = Command::new("bash")
            .arg("-c")
            .arg(
                // fd 3: a background job's stdin would be /dev/null without it.
                r#"
                exec 3<&0
                "$@" </dev/null 3<&- &
                qemu=$!
                { read -r _ <&3; kill -KILL "$qemu" 2>/dev/null; } &
                watchdog=$!
                wait "$qemu"
                status=$?
                kill "$watchdog" 2>/dev/null
                exit "$status"
                "#,
            )
            .arg("tidepool-zfs-vm")
            .arg("qemu-system-x86_64")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().context("qemu log")?)
            .stderr(log_file)
            .spawn()
            .context("starting qemu-system-x86_64 (installed by build-image.sh)")?;
        let lifeline = qemu.stdin.take();
        let exec_addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ports[0].1));
        let mut vm = ZfsVm {
            qemu: Some(qemu),
            lifeline,
            run_dir,
            keep_run_dir: false,
            console_log,
            remote: Remote::new(exec_addr),
            ports,
            share,
            boot_time: Duration::ZERO,
            image_dir: image_dir.to_path_buf(),
            kernel_release,
        };

        let deadline = started + config.boot_timeout;
        loop {
            if let Some(status) = vm.qemu.as_mut().and_then(|q| q.try_wait().ok().flatten()) {
                let qemu_out = std::fs::read_to_string(&qemu_log).unwrap_or_default();
                let err = anyhow!(
                    "qemu exited ({status}) before the VM was ready\nqemu: {}\n{}",
                    qemu_out.trim(),
                    vm.console_tail()
                );
                vm.keep_run_dir = true;
                return Err(if qemu_out.contains("host forwarding") {
                    LaunchError::PortTaken(err)
                } else {
                    LaunchError::Other(err)
                });
            }
            if vm.remote.ping(Duration::from_secs(2)).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                vm.keep_run_dir = true;
                return Err(LaunchError::Other(anyhow!(
                    "the VM's exec server did not answer within {:?}\n{}",
                    config.boot_timeout,
                    vm.console_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        vm.boot_time = started.elapsed();
        vm.sync_clock().await.map_err(LaunchError::Other)?;
        Ok(vm)
    }

    /// Sets the guest's clock to the host's. The guest reads its clock from the emulated RTC
    /// at boot, to the second, so it starts up to a second off (seen: -859 ms); lateness the
    /// agent measures against the controller's slots would read that much wrong. The set
    /// lands one exec after it was read here: half the best round trip is added for that.
    async fn sync_clock(&self) -> Result<()> {
        let mut round_trip = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            self.exec_ok(["true"]).await?;
            round_trip = round_trip.min(t.elapsed());
        }
        let at = jiff::Timestamp::now() + round_trip / 2;
        let set = format!("@{}.{:09}", at.as_second(), at.subsec_nanosecond());
        self.exec_ok(["date", "-u", "-s", set.as_str()])
            .await
            .context("setting the guest's clock")?;
        Ok(())
    }

    /// A `'static`, cloneable handle for running commands in this VM.
    pub fn remote(&self) -> Remote {
        self.remote.clone()
    }

    /// A command to run in the guest (argv exactly as given, no shell).
    pub fn command<I, S>(&self, argv: I) -> RemoteCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.remote.command(argv)
    }

    /// Runs `argv` to completion (empty stdin).
    pub async fn exec<I, S>(&self, argv: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command(argv).output().await
    }

    /// Runs `argv`; stdout as text, or an error with argv, status and stderr unless it exits 0.
    pub async fn exec_ok<I, S>(&self, argv: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command(argv).output_ok().await
    }

    /// Starts `argv` with piped stdin/stdout/stderr.
    pub async fn spawn<I, S>(&self, argv: I) -> Result<RemoteChild>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command(argv).spawn().await
    }

    /// A pool name not used before by this process (tests sharing a VM must not collide).
    pub fn unique_pool_name(&self, prefix: &str) -> String {
        format!("{prefix}{}", POOL_COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    /// Creates pool `name` (one simulated node) on a sparse file vdev of `size` bytes in
    /// [`Self::VDEV_DIR`], mounted at `/<name>`.
    pub async fn create_pool(&self, name: &str, size: u64) -> Result<Pool> {
        let vdev = format!("{}/{name}.img", Self::VDEV_DIR);
        self.exec_ok(["truncate", "-s", &size.to_string(), &vdev])
            .await?;
        self.exec_ok(["zpool", "create", "-f", name, &vdev])
            .await
            .with_context(|| format!("creating pool {name}"))?;
        Ok(Pool {
            name: name.to_owned(),
            vdev,
            size,
        })
    }

    /// Destroys pool `name` and removes its vdev file.
    pub async fn destroy_pool(&self, name: &str) -> Result<()> {
        self.exec_ok(["zpool", "destroy", "-f", name]).await?;
        self.exec_ok(["rm", "-f", &format!("{}/{name}.img", Self::VDEV_DIR)])
            .await?;
        Ok(())
    }

    /// The host port that forwards to `guest_port`, if it is forwarded.
    pub fn forwarded_port(&self, guest_port: u16) -> Option<u16> {
        self.ports
            .iter()
            .find(|(guest, _)| *guest == guest_port)
            .map(|(_, host)| *host)
    }

    /// `127.0.0.1:<forwarded port>` for `guest_port`.
    pub fn forwarded_addr(&self, guest_port: u16) -> Option<SocketAddr> {
        self.forwarded_port(guest_port)
            .map(|p| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)))
    }

    /// All forwards as (guest port, host port), the exec server's first.
    pub fn forwarded_ports(&self) -> &[(u16, u16)] {
        &self.ports
    }

    /// The read-only host share as (host directory, guest directory).
    pub fn host_share(&self) -> Option<(&Path, &Path)> {
        self.share.as_ref().map(|(h, g)| (h.as_path(), g.as_path()))
    }

    /// Where a host path under the host share appears in the guest.
    pub fn guest_path(&self, host_path: &Path) -> Option<PathBuf> {
        let (host, guest) = self.share.as_ref()?;
        let host_path = host_path.canonicalize().ok()?;
        let rel = host_path.strip_prefix(host).ok()?;
        Some(guest.join(rel))
    }

    /// The serial console log (kernel, init and exec server output).
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    /// From qemu start until the exec server answered.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The cached image directory (vmlinuz, initrd.img, root.img, manifest).
    pub fn image_dir(&self) -> &Path {
        &self.image_dir
    }

    /// The guest's kernel release, from the image manifest.
    pub fn kernel_release(&self) -> &str {
        &self.kernel_release
    }

    /// The last lines of the console log, for error messages.
    pub fn console_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.console_log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- last lines of the console log {} ---\n{tail}",
            self.console_log.display()
        )
    }
}

impl Drop for ZfsVm {
    fn drop(&mut self) {
        // EOF on the lifeline: the watchdog kills qemu.
        drop(self.lifeline.take());
        if let Some(mut qemu) = self.qemu.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match qemu.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = qemu.kill();
                        let _ = qemu.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if !self.keep_run_dir && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

enum LaunchError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for LaunchError {
    fn from(e: anyhow::Error) -> Self {
        LaunchError::Other(e)
    }
}

/// Runs `build-image.sh` (a no-op in about a second when cached) and returns the image dir.
async fn build_image() -> Result<PathBuf> {
    let script = vm_dir().join("build-image.sh");
    let started = Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // The build log (minutes on a cold cache) goes straight to the terminal.
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); its log is above",
            script.display(),
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(
        stdout
            .lines()
            .last()
            .context("build-image.sh printed no image directory")?
            .trim(),
    );
    for file in ["vmlinuz", "initrd.img", "root.img"] {
        if !dir.join(file).is_file() {
            bail!("{} has no {file}", dir.display());
        }
    }
    if started.elapsed() > Duration::from_secs(10) {
        eprintln!(
            "zfs-vm: image built in {:.0?} at {}",
            started.elapsed(),
            dir.display()
        );
    }
    Ok(dir)
}

/// Removes run directories (console logs) of test processes that are gone.
fn clean_stale_run_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tidepool-zfs-vm-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `n` distinct ports free on 127.0.0.1 right now.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path is not UTF-8: {}", path.display()))
}

/// Escapes a value for a qemu `key=value,...` option list (a comma is doubled).
fn qemu_opt(value: &str) -> String {
    value.replace(',', ",,")
}
