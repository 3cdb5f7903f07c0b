//! The zfs layer's [`Executor`] over the test VM: runs Tidepool's argv inside the guest
//! through the exec server, with the same piped stdin/stdout/stderr and kill-on-drop as
//! the local executor. This is how the conformance suite proves the layer against real
//! OpenZFS without a line of it being special to tests.

use std::io;

use tidepool_zfs::exec::{BoxFuture, Executor, ExitStatus, Process, Spawned};
use tidepool_zfs::{Argv, Zfs};

use crate::zfs_vm::{Remote, RemoteChild, ZfsVm};

/// Runs argv in the VM. Cheap to clone.
#[derive(Debug, Clone)]
pub struct VmExecutor {
    remote: Remote,
}

impl VmExecutor {
    pub fn new(remote: Remote) -> VmExecutor {
        VmExecutor { remote }
    }

    pub fn of(vm: &ZfsVm) -> VmExecutor {
        VmExecutor::new(vm.remote())
    }
}

/// The zfs layer bound to the VM.
pub fn vm_zfs(vm: &ZfsVm) -> Zfs<VmExecutor> {
    Zfs::new(VmExecutor::of(vm))
}

struct VmProcess(RemoteChild);

fn io_err(e: anyhow::Error) -> io::Error {
    io::Error::other(format!("{e:#}"))
}

impl Process for VmProcess {
    fn wait(&mut self) -> BoxFuture<'_, io::Result<ExitStatus>> {
        Box::pin(async move {
            let s = self.0.wait().await.map_err(io_err)?;
            Ok(ExitStatus {
                code: s.code,
                signal: s.signal,
            })
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move { self.0.kill().await.map(drop).map_err(io_err) })
    }
}

impl Executor for VmExecutor {
    fn spawn(&self, argv: &Argv) -> BoxFuture<'_, io::Result<Spawned>> {
        let mut cmd = self.remote.command(argv.as_slice().iter().cloned());
        // The guest runs argv exactly as given, so the environment the layer requires
        // (`LC_ALL=C`) travels as data, like the local executor's.
        for (key, value) in argv.env() {
            cmd.env(*key, *value);
        }
        Box::pin(async move {
            let mut child = cmd.spawn().await.map_err(io_err)?;
            let missing = || io::Error::other("remote child pipe missing");
            let stdin = child.stdin.take().ok_or_else(missing)?;
            let stdout = child.stdout.take().ok_or_else(missing)?;
            let stderr = child.stderr.take().ok_or_else(missing)?;
            Ok(Spawned {
                stdin: Box::pin(stdin),
                stdout: Box::pin(stdout),
                stderr: Box::pin(stderr),
                process: Box::new(VmProcess(child)),
            })
        })
    }
}
