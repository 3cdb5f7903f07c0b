//! The one place the harness's network differs from a cluster's: agents in a VM publish
//! their host-side forwarded address (where the controller on the host reaches them), but
//! a source agent inside a guest reaches a target agent elsewhere: at its guest port when
//! both run in the same VM, and through the host when the target runs in another VM (from
//! a QEMU user-net guest the host's loopback is [`ZfsVm::HOST_FROM_GUEST`], so
//! `10.0.2.2:<forwarded port>` reaches the other VM's forward). In a cluster both are the
//! node's address. [`GuestPeers`] passes every call through to the real transport
//! unchanged and only rewrites the target endpoint of a `SendToPeer`, the way a cluster's
//! routing would. The certificate pin, the ticket and everything else are untouched, so
//! pinning and tickets are tested for real.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tidepool_agent::LeaderEpoch;
use tidepool_reconciler::agents::{TransferAnswer, TransferCall};
use tidepool_reconciler::{AgentEndpoint, AgentError, Agents};
use tidepool_wire::{Request, Response};

use crate::zfs_vm::ZfsVm;

pub struct GuestPeers {
    inner: Arc<dyn Agents>,
    /// Host-side `127.0.0.1:<forwarded>` → (the VM it forwards to, by index; the host port;
    /// the guest port).
    forwards: HashMap<String, Forward>,
}

#[derive(Debug, Clone, Copy)]
struct Forward {
    vm: usize,
    host: u16,
    guest: u16,
}

impl GuestPeers {
    /// Agents in one VM: every forwarded agent port of `vm` is routed to its guest port.
    pub fn new(vm: &ZfsVm, inner: Arc<dyn Agents>) -> Arc<Self> {
        Self::across(&[vm], inner)
    }

    /// Agents in several VMs: a source agent reaches a target in its own VM at the guest
    /// port, and one in another VM at `10.0.2.2:<that VM's forwarded port>`.
    pub fn across(vms: &[&ZfsVm], inner: Arc<dyn Agents>) -> Arc<Self> {
        let forwards = vms
            .iter()
            .enumerate()
            .flat_map(|(vm, v)| {
                v.forwarded_ports().iter().map(move |&(guest, host)| {
                    (format!("127.0.0.1:{host}"), Forward { vm, host, guest })
                })
            })
            .collect();
        Arc::new(Self { inner, forwards })
    }

    /// Where the agent published at `source` reaches the agent published at `peer`; `None`
    /// when `peer` is no forward of these VMs (left as it is).
    fn route(&self, source: &str, peer: &str) -> Option<String> {
        let to = self.forwards.get(peer)?;
        let from = self.forwards.get(source).map(|f| f.vm);
        Some(if from == Some(to.vm) {
            format!("127.0.0.1:{}", to.guest)
        } else {
            format!("{}:{}", ZfsVm::HOST_FROM_GUEST, to.host)
        })
    }
}

impl Agents for GuestPeers {
    fn call<'a>(
        &'a self,
        agent: &'a AgentEndpoint,
        epoch: LeaderEpoch,
        request: Request,
    ) -> BoxFuture<'a, Result<Response, AgentError>> {
        self.inner.call(agent, epoch, request)
    }

    fn transfer<'a>(
        &'a self,
        agent: &'a AgentEndpoint,
        epoch: LeaderEpoch,
        call: TransferCall,
    ) -> BoxFuture<'a, Result<TransferAnswer, AgentError>> {
        let call = match call {
            TransferCall::Send(mut send) => {
                if let Some(routed) = self.route(&agent.endpoint, &send.peer.endpoint) {
                    send.peer.endpoint = routed;
                }
                TransferCall::Send(send)
            }
            other => other,
        };
        self.inner.transfer(agent, epoch, call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_in_the_same_vm_is_reached_at_its_guest_port_one_in_another_through_the_host() {
        let forwards = [(0, 41001, 7001), (0, 41003, 7003), (1, 42001, 7001)]
            .into_iter()
            .map(|(vm, host, guest)| (format!("127.0.0.1:{host}"), Forward { vm, host, guest }))
            .collect();
        let peers = GuestPeers {
            inner: tidepool_reconciler::PinnedAgents::new(
                "/nonexistent".into(),
                Default::default(),
            ),
            forwards,
        };
        let route = |from: &str, to: &str| peers.route(from, to);
        assert_eq!(
            route("127.0.0.1:41001", "127.0.0.1:41003").as_deref(),
            Some("127.0.0.1:7003")
        );
        assert_eq!(
            route("127.0.0.1:41001", "127.0.0.1:42001").as_deref(),
            Some("10.0.2.2:42001")
        );
        assert_eq!(
            route("127.0.0.1:42001", "127.0.0.1:41003").as_deref(),
            Some("10.0.2.2:41003")
        );
        assert_eq!(route("127.0.0.1:41001", "192.0.2.1:7001"), None);
    }
}
