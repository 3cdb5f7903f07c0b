//! `scripts/demo.sh`: shows what Tidepool does today, on real parts.
//!
//! 1. A real kube-apiserver + etcd with Tidepool's CRDs; the examples applied; a bad
//!    manifest refused at admission; `kubectl get tidepool`.
//! 2. The planner's next due times for the example schedules.
//! 3. Real OpenZFS 2.3 in a VM, two pools standing for two nodes; the zfs layer takes an
//!    atomic, owned snapshot of two datasets, lists the inventory in one call, replicates
//!    the database to the other "node" with a full and then an incremental stream, and
//!    shows the common snapshot by GUID on both sides.
//!
//! The agent and the controller that will do step 3 on their own from step 1's objects are
//! the next milestones; until then this is the honest picture.
//!
//! `--keep` leaves the control plane running after the demo (Ctrl-C stops it).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tidepool_api::{DatasetName, SnapshotName, SnapshotSchedule};
use tidepool_plan::naming::{NamePrecision, snapshot_name};
use tidepool_plan::schedule::Slots;
use tidepool_tests::control_plane::{ControlPlane, repo_root};
use tidepool_tests::zfs_exec::vm_zfs;
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_zfs::{PropertyName, PropertyValue, ReceiveOptions, SendBase, SendFlags, SendRequest};

fn heading(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

async fn kubectl(cp: &ControlPlane, args: &[&str]) -> Result<std::process::Output> {
    let out = cp
        .kubectl()
        .args(args)
        .output()
        .await
        .with_context(|| format!("running kubectl {}", args.join(" ")))?;
    Ok(out)
}

async fn kubectl_show(cp: &ControlPlane, args: &[&str]) -> Result<()> {
    println!("$ kubectl {}", args.join(" "));
    let out = kubectl(cp, args).await?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("kubectl {} failed", args.join(" "));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let root = repo_root();

    heading("Kubernetes: a real kube-apiserver + etcd, Tidepool's CRDs installed");
    let cp = ControlPlane::start().await?;
    println!(
        "control plane up in {:.1}s; kubeconfig: {}",
        cp.started_in().as_secs_f64(),
        cp.kubeconfig_path().display()
    );
    for crd in cp.install_crds(root.join("crds")).await? {
        println!("  CRD established: {crd}");
    }

    heading("The examples, applied as a user would (server-side apply)");
    let examples = root.join("examples");
    kubectl_show(&cp, &["apply", "--server-side", "-f", path_str(&examples)?]).await?;
    kubectl_show(&cp, &["get", "tidepool", "-A"]).await?;

    heading("Bad input is refused at admission, naming the field; nothing is stored");
    let bad_file = root.join("tests/fixtures/invalid/ss-dataset-command-substitution.yaml");
    print!(
        "{}",
        std::fs::read_to_string(&bad_file).context("reading the invalid manifest")?
    );
    println!("$ kubectl apply --server-side -f {}", bad_file.display());
    let out = kubectl(&cp, &["apply", "--server-side", "-f", path_str(&bad_file)?]).await?;
    print!("{}", String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        bail!("the invalid manifest {} was accepted", bad_file.display());
    }

    heading("The planner: when each example schedule runs next (pure, `now` is an input)");
    let now = jiff::Timestamp::now();
    for file in [
        "snapshot-schedule-gfs.yaml",
        "snapshot-schedule-interval.yaml",
    ] {
        let text = std::fs::read_to_string(examples.join(file))?;
        let value: serde_json::Value = serde_saphyr::from_str(&text)?;
        let schedule: SnapshotSchedule = serde_json::from_value(value)?;
        let name = schedule.metadata.name.clone().unwrap_or_default();
        let valid = schedule.spec.validate()?;
        let slots = Slots::new(&valid.schedule, &name)?;
        let next = slots.next_after(now)?;
        let after = slots.next_after(next)?;
        println!(
            "  {name}: next {next}, then {after} (jitter offset {})",
            slots.jitter_offset()
        );
    }

    heading("OpenZFS 2.3 in a VM: pool `tank` stands for node-a, pool `backup` for node-b");
    let vm = ZfsVm::boot().await?;
    println!(
        "VM ready in {:.1}s (kernel {})",
        vm.boot_time().as_secs_f64(),
        vm.kernel_release()
    );
    let zfs = vm_zfs(&vm);
    let version = zfs.version().await?;
    println!("  zfs version: {version:?}");
    vm.create_pool("tank", 512 << 20).await?;
    vm.create_pool("backup", 512 << 20).await?;
    let db: DatasetName = "tank/apps/db".parse()?;
    let wal: DatasetName = "tank/apps/db-wal".parse()?;
    for ds in [&db, &wal] {
        zfs.create(ds, true, &[]).await?;
    }
    zfs.create(&"backup/replicas".parse()?, true, &[]).await?;
    write_data(&vm, "/tank/apps/db/data-1", 8).await?;
    write_data(&vm, "/tank/apps/db-wal/wal-1", 2).await?;

    heading("An atomic snapshot of both datasets, owned by default/db-hourly");
    let owner: PropertyName = tidepool_api::OWNER_PROPERTY.parse()?;
    let owned_by: PropertyValue = "default/db-hourly".parse()?;
    let t1 = jiff::Timestamp::now();
    let first = snapshot_name("tidepool", "hourly", t1, NamePrecision::Seconds)?;
    let snaps = [db.snapshot(&first)?, wal.snapshot(&first)?];
    zfs.snapshot(&snaps, &[(owner.clone(), owned_by.clone())])
        .await?;
    for s in &snaps {
        println!("  zfs snapshot -o {owner}={owned_by} ... {s}");
    }

    heading("Inventory of the pool: one `zfs list -r` call");
    let inventory = zfs
        .inventory(&"tank".parse()?, std::slice::from_ref(&owner))
        .await?;
    println!(
        "  {:<10} {:<48} {:>20} {:>4}  owner",
        "type", "name", "guid", "txg"
    );
    for e in &inventory.entries {
        println!(
            "  {:<10} {:<48} {:>20} {:>4}  {}",
            format!("{:?}", e.kind),
            e.name.to_string(),
            e.guid,
            e.createtxg,
            e.user_prop(0).unwrap_or("-")
        );
    }

    heading("Replicate tank/apps/db to backup/replicas/db: full, then incremental");
    let target: DatasetName = "backup/replicas/db".parse()?;
    let flags = SendFlags {
        raw: true,
        compressed: true,
        large_blocks: true,
        embedded_data: true,
        properties: false,
    };
    let (sent, secs) = replicate(&zfs, &snaps[0], SendBase::Full, flags, &target).await?;
    println!("  full stream of {}: {sent} bytes in {secs:.2}s", snaps[0]);

    write_data(&vm, "/tank/apps/db/data-2", 4).await?;
    let t2 = t1
        .checked_add(jiff::SignedDuration::from_secs(3600))
        .context("time")?;
    let second = db.snapshot(&snapshot_name(
        "tidepool",
        "hourly",
        t2,
        NamePrecision::Seconds,
    )?)?;
    zfs.snapshot(std::slice::from_ref(&second), &[(owner.clone(), owned_by)])
        .await?;
    let (sent, secs) = replicate(
        &zfs,
        &second,
        SendBase::WithIntermediates(snaps[0].clone()),
        flags,
        &target,
    )
    .await?;
    println!(
        "  incremental (-I) {} -> {}: {sent} bytes in {secs:.2}s",
        snaps[0], second
    );

    heading("Source and target share their snapshots by GUID");
    for ds in [&db, &target] {
        let out = vm
            .exec_ok([
                "zfs",
                "list",
                "-H",
                "-p",
                "-t",
                "snapshot",
                "-o",
                "name,guid",
                ds.as_str(),
            ])
            .await?;
        print!("{}", indent(&out));
    }

    if keep {
        println!(
            "\ncontrol plane still up: export KUBECONFIG={}  (Ctrl-C to stop)",
            cp.kubeconfig_path().display()
        );
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

/// Sends `snapshot` from `base` into `target` through the host; returns bytes and seconds.
async fn replicate<E: tidepool_zfs::Executor>(
    zfs: &tidepool_zfs::Zfs<E>,
    snapshot: &SnapshotName,
    base: SendBase,
    flags: SendFlags,
    target: &DatasetName,
) -> Result<(u64, f64)> {
    let started = Instant::now();
    let send = zfs
        .send(&SendRequest {
            snapshot: snapshot.clone(),
            base,
            flags,
        })
        .await?;
    let receive = zfs.receive(&ReceiveOptions::new(target.clone())).await?;
    let bytes = tidepool_zfs::pipe(send, receive).await?;
    Ok((bytes, started.elapsed().as_secs_f64()))
}

async fn write_data(vm: &ZfsVm, path: &str, mib: u32) -> Result<()> {
    vm.exec_ok([
        "dd",
        "if=/dev/urandom",
        &format!("of={path}"),
        "bs=1M",
        &format!("count={mib}"),
        "status=none",
    ])
    .await?;
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}
