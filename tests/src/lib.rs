//! Test harness: starts the real parts Tidepool's tests need.
//!
//! - [`control_plane`]: a real kube-apiserver + etcd (built from Go modules, cached).
//! - [`zfs_vm`]: real OpenZFS 2.3 in a QEMU (TCG) VM.
//! - [`chart`]: the Helm chart rendered by real `helm` and applied, RBAC and policies in force.
//! - [`kubelet`]: the Node and Pod objects and Pod-bound tokens a kubelet-less cluster lacks.
//! - [`agents`]: `tidepool agent` processes inside the VM, one per simulated node.
//! - [`release`]: a chart release with controllers, agents and grants, as e2e tests use it.
//! - [`replicas`]: a replica and its policy read back (GUIDs, owners, holds, status).
//! - [`snapshots`]: a schedule's snapshots read back from zfs in the guest, checked.
//! - [`guest_peers`]: agents in VMs reaching each other (guest ports within a VM, the host
//!   between VMs).
//! - [`host_agents`]: two in-process agents over that executor, for the transport alone.
//! - [`stream_exec`]: a zfs executor without zfs, to measure the transfer transport alone.
//! - [`s3_server`]: a real S3-compatible server (versitygw, built from Go modules, cached).

pub mod agents;
pub mod chart;
pub mod control_plane;
pub mod far_host;
pub mod guest_peers;
pub mod host_agents;
pub mod kubelet;
pub mod release;
pub mod replicas;
pub mod s3_server;
pub mod snapshots;
pub mod stream_exec;
pub mod zfs_exec;
pub mod zfs_vm;
