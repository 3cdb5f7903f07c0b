//! Smoke test of the OpenZFS VM harness: boot, pools, a dataset and snapshot, and a
//! `zfs send | zfs receive` pipe between two remote processes through the host.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use tidepool_tests::zfs_vm::ZfsVm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_and_pipes_send_into_receive() -> Result<()> {
    let started = Instant::now();
    let vm = ZfsVm::shared().await?;
    eprintln!(
        "zfs-vm: boot-to-ready {:.1?} (kernel {}, console log {})",
        vm.boot_time(),
        vm.kernel_release(),
        vm.console_log().display()
    );

    let version = vm.exec_ok(["zfs", "version"]).await?;
    eprintln!("zfs-vm: {}", version.replace('\n', " "));
    ensure!(
        version.lines().any(|l| l.starts_with("zfs-2.3")),
        "not OpenZFS 2.3: {version}"
    );

    let src = vm.unique_pool_name("smokesrc");
    let dst = vm.unique_pool_name("smokedst");
    vm.create_pool(&src, 256 << 20).await?;
    vm.create_pool(&dst, 256 << 20).await?;

    let dataset = format!("{src}/data");
    vm.exec_ok(["zfs", "create", &dataset]).await?;
    vm.exec_ok([
        "dd",
        "if=/dev/urandom",
        &format!("of=/{dataset}/blob"),
        "bs=1M",
        "count=8",
    ])
    .await?;
    let snapshot = format!("{dataset}@one");
    vm.exec_ok(["zfs", "snapshot", &snapshot]).await?;

    // send's stdout -> host -> receive's stdin.
    let target = format!("{dst}/copy");
    let mut send = vm.spawn(["zfs", "send", &snapshot]).await?;
    let mut recv = vm.spawn(["zfs", "receive", "-u", &target]).await?;
    let mut stream = send.stdout.take().context("send stdout")?;
    let mut sink = recv.stdin.take().context("receive stdin")?;
    let copied = tokio::spawn(async move {
        let n = tokio::io::copy(&mut stream, &mut sink).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut sink).await?;
        anyhow::Ok(n)
    });
    let send_status = send.wait().await?;
    let bytes = copied.await??;
    let recv_out = recv.wait_with_output().await?;
    ensure!(send_status.success(), "zfs send: {send_status}");
    ensure!(
        recv_out.status.success(),
        "zfs receive: {} {}",
        recv_out.status,
        recv_out.stderr_lossy()
    );
    eprintln!("zfs-vm: piped {bytes} bytes of send stream through the host");
    ensure!(bytes > 8 << 20, "stream too small: {bytes} bytes");

    let listing = vm
        .exec_ok([
            "zfs",
            "list",
            "-H",
            "-p",
            "-t",
            "snapshot",
            "-o",
            "name,guid",
            "-r",
            &src,
            &dst,
        ])
        .await?;
    let rows: Vec<Vec<&str>> = listing.lines().map(|l| l.split('\t').collect()).collect();
    let guid_of = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .map(|r| r[1].to_owned())
            .with_context(|| format!("{name} not in listing:\n{listing}"))
    };
    ensure!(
        guid_of(&snapshot)? == guid_of(&format!("{target}@one"))?,
        "guids differ:\n{listing}"
    );

    // The exec server runs argv as given: a shell metacharacter is just a byte.
    let echoed = vm.exec_ok(["echo", "a;b", "$(x)"]).await?;
    ensure!(echoed == "a;b $(x)\n", "echo gave {echoed:?}");

    // Forwarded ports are loopback-only, and a server in the guest is reachable through one.
    for guest_port in ZfsVm::AGENT_PORTS {
        let addr = vm.forwarded_addr(guest_port).context("forwarded")?;
        ensure!(addr.ip().is_loopback(), "{addr} is not loopback");
    }
    let guest_port = ZfsVm::AGENT_PORTS[0];
    let mut server = vm
        .spawn([
            "python3",
            "-c",
            "import socket,sys\n\
             s=socket.create_server(('0.0.0.0',int(sys.argv[1])))\n\
             print('listening',flush=True)\n\
             c,_=s.accept();c.sendall(b'hello from the guest');c.close()",
            &guest_port.to_string(),
        ])
        .await?;
    let mut line = String::new();
    let mut server_out = tokio::io::BufReader::new(server.stdout.take().context("server stdout")?);
    tokio::io::AsyncBufReadExt::read_line(&mut server_out, &mut line).await?;
    ensure!(line == "listening\n", "guest server said {line:?}");
    let addr = vm.forwarded_addr(guest_port).context("forwarded")?;
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let mut greeting = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut greeting).await?;
    ensure!(
        greeting == "hello from the guest",
        "got {greeting:?} via {addr}"
    );
    ensure!(server.wait().await?.success(), "guest server failed");

    // The host share (the cargo target dir) is visible, read-only, in the guest.
    let target_dir = tidepool_tests::zfs_vm::host_target_dir();
    let guest_target = vm.guest_path(&target_dir).context("target dir is shared")?;
    let guest_target = guest_target.to_str().context("utf-8")?;
    vm.exec_ok(["test", "-d", &format!("{guest_target}/debug")])
        .await?;
    let write = vm
        .exec(["touch", &format!("{guest_target}/written-by-guest")])
        .await?;
    ensure!(!write.status.success(), "the host share is writable");

    // Round-trip cost of one small command, which every zfs-layer test pays many times.
    let rounds = 10;
    let t = Instant::now();
    for _ in 0..rounds {
        vm.exec_ok(["true"]).await?;
    }
    eprintln!("zfs-vm: one `true` round trip {:.0?}", t.elapsed() / rounds);

    vm.destroy_pool(&dst).await?;
    vm.destroy_pool(&src).await?;
    eprintln!(
        "zfs-vm: smoke test wall time {:.1?} (including boot)",
        started.elapsed()
    );
    Ok(())
}

/// Set in the child process of [`qemu_dies_with_the_test_process`].
const ORPHAN_CHILD_ENV: &str = "TIDEPOOL_ZFS_VM_ORPHAN_CHILD";

/// A test process that dies hard (SIGKILL: no destructor, no panic handler) must not leave
/// its qemu behind. The test runs this binary again as a child that starts booting a VM,
/// kills the child as soon as its qemu exists, and waits for that qemu to go.
#[tokio::test]
async fn qemu_dies_with_the_test_process() -> Result<()> {
    if std::env::var_os(ORPHAN_CHILD_ENV).is_some() {
        // The child: start a VM; the parent kills us during the boot.
        ZfsVm::boot().await?;
        anyhow::bail!("the parent should have killed this process");
    }
    // The image is built (or being built) by the shared VM; the child must not wait for it.
    ZfsVm::shared().await?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "qemu_dies_with_the_test_process", "--nocapture"])
        .env(ORPHAN_CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // The child's run dir, which is in its qemu's command line.
    let marker = format!("tidepool-zfs-vm-{}-", child.id());
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let qemu = loop {
        if let Some(pid) = find_qemu(&marker) {
            break pid;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the child exited ({status}) before its qemu was seen");
        }
        ensure!(Instant::now() < deadline, "the child's qemu never appeared");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    child.kill()?;
    child.wait()?;
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{qemu}")).exists() {
        ensure!(
            Instant::now() < deadline,
            "qemu {qemu} outlived its test process"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The pid of a qemu-system-x86_64 whose command line contains `marker`.
fn find_qemu(marker: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            let program = args.next()?;
            let is_qemu = program.ends_with(b"qemu-system-x86_64");
            let marked = String::from_utf8_lossy(&cmdline).contains(marker);
            (is_qemu && marked).then_some(pid)
        })
}
