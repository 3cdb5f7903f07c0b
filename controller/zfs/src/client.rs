//! [`Zfs`]: the typed commands run through an [`Executor`], with outputs parsed and
//! failures classified.

use std::time::Duration;

use tidepool_api::names::{BookmarkName, DatasetName, PoolName, SnapshotName, SnapshotShortName};
use tokio::io::BufReader;

use crate::cmd::{self, BookmarkSource, ListRequest, SendRequest};
use crate::error::{ErrorKind, RequestError, ZfsError};
use crate::exec::{Argv, Executor, Output, Spawned, collect_stderr, join_stderr, run};
use crate::name::ZfsTarget;
use crate::parse::{
    self, DestroyEstimate, Hold, Inventory, LineError, ListEntry, PoolEntry, PropertyEntry,
    ReadError, SendEstimate, ZfsVersion, read_records,
};
use crate::stream::{ReceiveSink, SendStream, StreamLimits};
use tidepool_api::values::{HoldTag, PropertyName, PropertyValue, ResumeToken};
use tidepool_wire::ReceiveOptions;

/// What a command does, which decides how long it may take ([`Timeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Reads a few named objects or the pools: `version`, `get`, `holds`, `zpool list`.
    Query,
    /// Lists a tree (`zfs list -r`): one line per object, possibly millions on a large
    /// pool.
    Listing,
    /// Changes a few objects in one transaction: `snapshot`, `create`, `hold`, `release`,
    /// `bookmark`, `rename`, `set`, `inherit`, `receive -A`. Each waits for a txg sync,
    /// which a busy pool can stretch to many seconds.
    Change,
    /// `destroy`: a batch of snapshots frees their blocks before it returns.
    Destroy,
    /// `send -n -v -P`: walks the snapshots of the range to estimate the stream.
    Estimate,
}

/// Time limits of the zfs layer. Commands that are not streams get a limit per
/// [`CommandKind`] and are killed when it passes ([`ZfsError::Timeout`]); streams have no
/// overall limit (they take as long as the data does) but fail when no byte moves for
/// `stream_stall` ([`ZfsError::Stalled`]) and when the process does not exit within
/// `stream_exit` of the stream's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub query: Duration,
    pub listing: Duration,
    pub change: Duration,
    pub destroy: Duration,
    pub estimate: Duration,
    pub stream_stall: Duration,
    pub stream_exit: Duration,
}

impl Default for Timeouts {
    /// Generous on purpose: a limit exists to free a wedged agent, not to race a busy
    /// pool. A listing is measured in lines (a million lines parse in about a second, see
    /// the benchmark, but zfs itself reads them from disk), a change in txg syncs.
    fn default() -> Timeouts {
        Timeouts {
            query: Duration::from_secs(60),
            listing: Duration::from_secs(30 * 60),
            change: Duration::from_secs(5 * 60),
            destroy: Duration::from_secs(15 * 60),
            estimate: Duration::from_secs(10 * 60),
            stream_stall: Duration::from_secs(5 * 60),
            stream_exit: Duration::from_secs(5 * 60),
        }
    }
}

impl Timeouts {
    /// The limit of one kind of command.
    pub fn of(&self, kind: CommandKind) -> Duration {
        match kind {
            CommandKind::Query => self.query,
            CommandKind::Listing => self.listing,
            CommandKind::Change => self.change,
            CommandKind::Destroy => self.destroy,
            CommandKind::Estimate => self.estimate,
        }
    }

    fn streams(&self) -> StreamLimits {
        StreamLimits {
            stall: self.stream_stall,
            exit: self.stream_exit,
        }
    }
}

/// The zfs layer: every zfs/zpool command Tidepool runs goes through one of these.
#[derive(Debug, Clone)]
pub struct Zfs<E> {
    exec: E,
    timeouts: Timeouts,
}

impl<E: Executor> Zfs<E> {
    pub fn new(exec: E) -> Zfs<E> {
        Zfs {
            exec,
            timeouts: Timeouts::default(),
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Zfs<E> {
        self.timeouts = timeouts;
        self
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub fn executor(&self) -> &E {
        &self.exec
    }

    pub(crate) async fn run(&self, kind: CommandKind, argv: Argv) -> Result<Output, ZfsError> {
        run(&self.exec, &argv, Some(self.timeouts.of(kind))).await
    }

    /// Runs a command whose output is one record per line, parsing each line as it
    /// streams in.
    pub(crate) async fn run_lines<T>(
        &self,
        kind: CommandKind,
        argv: Argv,
        mut parse: impl FnMut(&str) -> Result<T, LineError>,
        mut each: impl FnMut(T),
    ) -> Result<(), ZfsError> {
        let fut = async {
            let Spawned {
                stdin,
                stdout,
                stderr,
                mut process,
            } = self
                .exec
                .spawn(&argv)
                .await
                .map_err(|source| ZfsError::Spawn {
                    argv: argv.clone(),
                    source,
                })?;
            drop(stdin);
            let err_task = collect_stderr(stderr);
            let mut reader = BufReader::with_capacity(256 * 1024, stdout);
            let parsed = read_records(&mut reader, &mut parse, &mut each).await;
            if parsed.is_err() {
                // Stop reading: make sure the process does not linger on a full pipe.
                let _ = process.kill().await;
            }
            let status = process.wait().await;
            let stderr = join_stderr(err_task).await;
            let status = status.map_err(|source| ZfsError::Io {
                argv: argv.clone(),
                source,
            })?;
            if !status.success() {
                return Err(ZfsError::command(argv.clone(), status, stderr));
            }
            match parsed {
                Ok(_) => Ok(()),
                Err(ReadError::Io(source)) => Err(ZfsError::Io {
                    argv: argv.clone(),
                    source,
                }),
                Err(ReadError::Line { line, reason }) => Err(ZfsError::Parse {
                    argv: argv.clone(),
                    line,
                    reason,
                }),
            }
        };
        let timeout = self.timeouts.of(kind);
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(ZfsError::Timeout {
                    argv: argv.clone(),
                    timeout,
                })
            })
    }

    /// `zfs version`: userland and kernel module versions.
    pub async fn version(&self) -> Result<ZfsVersion, ZfsError> {
        let argv = cmd::version();
        let out = self.run(CommandKind::Query, argv.clone()).await?;
        parse::parse_version(&String::from_utf8_lossy(&out.stdout)).map_err(|reason| {
            ZfsError::Parse {
                argv,
                line: 1,
                reason,
            }
        })
    }

    /// `zpool list -H -p`: pools with health and capacity (all pools when `pools` is
    /// empty).
    pub async fn pools(&self, pools: &[PoolName]) -> Result<Vec<PoolEntry>, ZfsError> {
        let mut v = Vec::new();
        self.run_lines(
            CommandKind::Query,
            cmd::pool_list(pools),
            parse::parse_pool_line,
            |p| v.push(p),
        )
        .await?;
        Ok(v)
    }

    /// Runs a listing and hands each entry to `each` as it is parsed.
    pub async fn list_each(
        &self,
        req: &ListRequest,
        each: impl FnMut(ListEntry),
    ) -> Result<(), ZfsError> {
        let parser = req.parser();
        self.run_lines(
            CommandKind::Listing,
            req.argv(),
            |l| parser.parse_line(l),
            each,
        )
        .await
    }

    /// Runs a listing and collects it.
    pub async fn list(&self, req: &ListRequest) -> Result<Inventory, ZfsError> {
        let mut entries = Vec::new();
        self.list_each(req, |e| entries.push(e)).await?;
        Ok(Inventory {
            user_props: req.user_props.clone(),
            entries,
        })
    }

    /// Everything under `root` (filesystems, volumes, snapshots, bookmarks, with the given
    /// user properties) in one `zfs list -r` call.
    pub async fn inventory(
        &self,
        root: &DatasetName,
        user_props: &[PropertyName],
    ) -> Result<Inventory, ZfsError> {
        self.list(&ListRequest::inventory(root.clone(), user_props.to_vec()))
            .await
    }

    /// `zfs snapshot -o prop=value... a@x b@x`: atomic across all the snapshots.
    pub async fn snapshot(
        &self,
        snapshots: &[SnapshotName],
        props: &[(PropertyName, PropertyValue)],
    ) -> Result<(), ZfsError> {
        if snapshots.is_empty() {
            return Err(ZfsError::empty_batch("snapshot"));
        }
        self.run(CommandKind::Change, cmd::snapshot(snapshots, props))
            .await
            .map(drop)
    }

    /// `zfs create [-p] -o prop=value... dataset`.
    pub async fn create(
        &self,
        dataset: &DatasetName,
        parents: bool,
        props: &[(PropertyName, PropertyValue)],
    ) -> Result<(), ZfsError> {
        self.run(CommandKind::Change, cmd::create(dataset, parents, props))
            .await
            .map(drop)
    }

    /// `zfs destroy dataset@a,b,c`. A snapshot with holds fails the whole call with
    /// [`ErrorKind::Held`] (zfs itself reports it as busy; the layer looks at the holds to
    /// tell the two apart).
    pub async fn destroy_snapshots(
        &self,
        dataset: &DatasetName,
        shorts: &[SnapshotShortName],
    ) -> Result<(), ZfsError> {
        if shorts.is_empty() {
            return Err(ZfsError::empty_batch("destroy"));
        }
        match self
            .run(
                CommandKind::Destroy,
                cmd::destroy_snapshots(dataset, shorts),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Busy => {
                let snaps: Vec<SnapshotName> = shorts
                    .iter()
                    .filter_map(|s| SnapshotName::new(dataset, s).ok())
                    .collect();
                match self.holds(&snaps).await {
                    Ok(h) if !h.is_empty() => Err(e.with_kind(ErrorKind::Held)),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `zfs destroy -n -v -p dataset@a,b,c`: what a batched destroy would remove and the
    /// space it would free; nothing is destroyed.
    pub async fn destroy_snapshots_estimate(
        &self,
        dataset: &DatasetName,
        shorts: &[SnapshotShortName],
    ) -> Result<DestroyEstimate, ZfsError> {
        if shorts.is_empty() {
            return Err(ZfsError::empty_batch("destroy"));
        }
        let argv = cmd::destroy_snapshots_dry_run(dataset, shorts);
        let out = self.run(CommandKind::Query, argv.clone()).await?;
        parse::parse_destroy_estimate(&String::from_utf8_lossy(&out.stdout)).map_err(|reason| {
            ZfsError::Parse {
                argv,
                line: 0,
                reason,
            }
        })
    }

    /// `zfs destroy dataset@snap`. For tests: Tidepool destroys snapshots in batches, one
    /// atomic call per dataset ([`Zfs::destroy_snapshots`]).
    #[cfg(any(test, feature = "test-support"))]
    pub async fn destroy_snapshot(&self, snapshot: &SnapshotName) -> Result<(), ZfsError> {
        self.destroy_snapshots(&snapshot.dataset(), &[snapshot.short()])
            .await
    }

    /// `zfs destroy dataset#mark`.
    pub async fn destroy_bookmark(&self, bookmark: &BookmarkName) -> Result<(), ZfsError> {
        self.run(CommandKind::Destroy, cmd::destroy_bookmark(bookmark))
            .await
            .map(drop)
    }

    /// `zfs destroy dataset` (never recursive). For tests only: Tidepool never destroys a
    /// dataset.
    #[cfg(any(test, feature = "test-support"))]
    pub async fn destroy_dataset(&self, dataset: &DatasetName) -> Result<(), ZfsError> {
        self.run(CommandKind::Destroy, cmd::destroy_dataset(dataset))
            .await
            .map(drop)
    }

    /// `zfs hold tag snap...`.
    pub async fn hold(&self, tag: &HoldTag, snapshots: &[SnapshotName]) -> Result<(), ZfsError> {
        if snapshots.is_empty() {
            return Err(ZfsError::empty_batch("hold"));
        }
        self.run(CommandKind::Change, cmd::hold(tag, snapshots))
            .await
            .map(drop)
    }

    /// `zfs release tag snap...`.
    pub async fn release(&self, tag: &HoldTag, snapshots: &[SnapshotName]) -> Result<(), ZfsError> {
        if snapshots.is_empty() {
            return Err(ZfsError::empty_batch("release"));
        }
        self.run(CommandKind::Change, cmd::release(tag, snapshots))
            .await
            .map(drop)
    }

    /// `zfs holds -H -p snap...`: the holds on the given snapshots.
    pub async fn holds(&self, snapshots: &[SnapshotName]) -> Result<Vec<Hold>, ZfsError> {
        if snapshots.is_empty() {
            return Ok(Vec::new());
        }
        let mut v = Vec::new();
        self.run_lines(
            CommandKind::Query,
            cmd::holds(snapshots, false),
            parse::parse_hold_line,
            |h| v.push(h),
        )
        .await?;
        Ok(v)
    }

    /// `zfs bookmark snap|bookmark new-bookmark`.
    pub async fn bookmark(
        &self,
        source: &BookmarkSource,
        bookmark: &BookmarkName,
    ) -> Result<(), ZfsError> {
        self.run(CommandKind::Change, cmd::bookmark(source, bookmark))
            .await
            .map(drop)
    }

    /// `zfs rename [-u] from to`.
    pub async fn rename_dataset(
        &self,
        from: &DatasetName,
        to: &DatasetName,
        no_remount: bool,
    ) -> Result<(), ZfsError> {
        self.run(
            CommandKind::Change,
            cmd::rename_dataset(from, to, no_remount),
        )
        .await
        .map(drop)
    }

    /// `zfs rename ds@from ds@to`.
    pub async fn rename_snapshot(
        &self,
        from: &SnapshotName,
        to: &SnapshotShortName,
    ) -> Result<(), ZfsError> {
        self.run(CommandKind::Change, cmd::rename_snapshot(from, to))
            .await
            .map(drop)
    }

    /// `zfs get -H -p -o name,property,value,source props targets...`.
    pub async fn get<T: ZfsTarget>(
        &self,
        props: &[PropertyName],
        targets: &[T],
    ) -> Result<Vec<PropertyEntry>, ZfsError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut v = Vec::new();
        self.run_lines(
            CommandKind::Query,
            cmd::get(props, targets),
            parse::parse_get_line,
            |p| v.push(p),
        )
        .await?;
        Ok(v)
    }

    /// One property of one target; `None` when zfs prints `-`.
    pub async fn get_one<T: ZfsTarget>(
        &self,
        prop: &PropertyName,
        target: &T,
    ) -> Result<Option<String>, ZfsError> {
        let argv = cmd::get(std::slice::from_ref(prop), std::slice::from_ref(target));
        let entries = self
            .get(std::slice::from_ref(prop), std::slice::from_ref(target))
            .await?;
        match entries.as_slice() {
            [e] => Ok(e.value_opt().map(str::to_owned)),
            other => Err(ZfsError::Parse {
                argv,
                line: other.len(),
                reason: LineError::RecordCount {
                    expected: 1,
                    found: other.len(),
                },
            }),
        }
    }

    /// `zfs set prop=value... target`.
    pub async fn set<T: ZfsTarget + ?Sized>(
        &self,
        target: &T,
        props: &[(PropertyName, PropertyValue)],
    ) -> Result<(), ZfsError> {
        if props.is_empty() {
            return Ok(());
        }
        self.run(CommandKind::Change, cmd::set(target, props))
            .await
            .map(drop)
    }

    /// `zfs inherit prop target`.
    pub async fn inherit<T: ZfsTarget + ?Sized>(
        &self,
        target: &T,
        prop: &PropertyName,
    ) -> Result<(), ZfsError> {
        self.run(CommandKind::Change, cmd::inherit(target, prop))
            .await
            .map(drop)
    }

    /// Starts `zfs send` and returns its stream.
    pub async fn send(&self, req: &SendRequest) -> Result<SendStream, ZfsError> {
        self.spawn_send(req.argv()).await
    }

    /// Starts `zfs send -t token` (resumes an interrupted stream).
    pub async fn send_resume(&self, token: &ResumeToken) -> Result<SendStream, ZfsError> {
        self.spawn_send(cmd::send_resume(token, false)).await
    }

    async fn spawn_send(&self, argv: Argv) -> Result<SendStream, ZfsError> {
        tracing::debug!(%argv, "zfs: send");
        let s = self
            .exec
            .spawn(&argv)
            .await
            .map_err(|source| ZfsError::Spawn {
                argv: argv.clone(),
                source,
            })?;
        Ok(SendStream::new(
            argv,
            s.stdin,
            s.stdout,
            s.stderr,
            s.process,
            self.timeouts.streams(),
        ))
    }

    /// `zfs send -n -v -P ...`: the estimated stream size, nothing sent.
    pub async fn send_estimate(&self, req: &SendRequest) -> Result<SendEstimate, ZfsError> {
        self.estimate(req.estimate_argv()).await
    }

    /// `zfs send -n -v -P -t token`: the estimated size of the rest of a resumed stream.
    pub async fn send_resume_estimate(
        &self,
        token: &ResumeToken,
    ) -> Result<SendEstimate, ZfsError> {
        self.estimate(cmd::send_resume(token, true)).await
    }

    async fn estimate(&self, argv: Argv) -> Result<SendEstimate, ZfsError> {
        let out = self.run(CommandKind::Estimate, argv.clone()).await?;
        // OpenZFS prints the dry-run report on stdout; older releases used stderr.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = if stdout.trim().is_empty() {
            out.stderr.clone()
        } else {
            stdout.into_owned()
        };
        parse::parse_send_estimate(&text).map_err(|reason| ZfsError::Parse {
            argv,
            line: 0,
            reason,
        })
    }

    /// Starts `zfs receive` and returns the sink to write the stream into.
    pub async fn receive(&self, options: &ReceiveOptions) -> Result<ReceiveSink, ZfsError> {
        self.spawn_receive(cmd::receive(options)).await
    }

    pub(crate) async fn spawn_receive(&self, argv: Argv) -> Result<ReceiveSink, ZfsError> {
        tracing::debug!(%argv, "zfs: receive");
        let s = self
            .exec
            .spawn(&argv)
            .await
            .map_err(|source| ZfsError::Spawn {
                argv: argv.clone(),
                source,
            })?;
        Ok(ReceiveSink::new(
            argv,
            s.stdin,
            s.stdout,
            s.stderr,
            s.process,
            self.timeouts.streams(),
        ))
    }

    /// `zfs receive -A target`: discards a partial receive.
    pub async fn receive_abort(&self, target: &DatasetName) -> Result<(), ZfsError> {
        self.run(CommandKind::Change, cmd::receive_abort(target))
            .await
            .map(drop)
    }

    /// The `receive_resume_token` of a dataset, if a partial receive is pending.
    pub async fn resume_token(
        &self,
        dataset: &DatasetName,
    ) -> Result<Option<ResumeToken>, ZfsError> {
        let prop: PropertyName = "receive_resume_token"
            .parse()
            .map_err(RequestError::Value)?;
        let argv = cmd::get(std::slice::from_ref(&prop), std::slice::from_ref(dataset));
        match self.get_one(&prop, dataset).await? {
            None => Ok(None),
            Some(t) => t.parse().map(Some).map_err(|e| ZfsError::Parse {
                argv,
                line: 1,
                reason: LineError::Value(e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::exec::LocalExecutor;

    /// A `zfs` that never answers, so every call ends at its kind's limit.
    fn silent_zfs_dir() -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tidepool-zfs-timeouts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let zfs = dir.join("zfs");
        std::fs::write(&zfs, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&zfs, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn limit_of(e: ZfsError) -> Duration {
        match e {
            ZfsError::Timeout { timeout, .. } => timeout,
            other => panic!("expected a timeout, got {other}"),
        }
    }

    #[tokio::test]
    async fn each_command_kind_runs_under_its_own_limit() {
        let ms = Duration::from_millis;
        let z = Zfs::new(LocalExecutor::with_bin_dir(silent_zfs_dir())).with_timeouts(Timeouts {
            query: ms(100),
            listing: ms(150),
            change: ms(200),
            destroy: ms(250),
            estimate: ms(300),
            ..Timeouts::default()
        });
        let ds: DatasetName = "tank/a".parse().unwrap();
        let snap: SnapshotName = "tank/a@s".parse().unwrap();
        let short: SnapshotShortName = "s".parse().unwrap();
        assert_eq!(limit_of(z.version().await.unwrap_err()), ms(100));
        assert_eq!(limit_of(z.inventory(&ds, &[]).await.unwrap_err()), ms(150));
        let taken = z.snapshot(std::slice::from_ref(&snap), &[]).await;
        assert_eq!(limit_of(taken.unwrap_err()), ms(200));
        let destroyed = z.destroy_snapshots(&ds, std::slice::from_ref(&short)).await;
        assert_eq!(limit_of(destroyed.unwrap_err()), ms(250));
        let estimate = z
            .send_estimate(&crate::SendRequest::full(snap.clone()))
            .await;
        assert_eq!(limit_of(estimate.unwrap_err()), ms(300));
    }
}
