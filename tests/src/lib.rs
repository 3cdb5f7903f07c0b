//! Test harness: starts the real parts Tidepool's tests need.
//!
//! - [`control_plane`]: a real kube-apiserver + etcd (built from Go modules, cached).
//! - [`zfs_vm`]: real OpenZFS 2.3 in a QEMU (TCG) VM.

pub mod control_plane;
pub mod zfs_exec;
pub mod zfs_vm;
