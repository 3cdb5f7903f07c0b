//! The one place the harness's network differs from a cluster's: agents in one VM publish
//! their host-side forwarded address (where the controller on the host reaches them), but
//! a source agent inside the guest reaches a target agent at its guest port. In a cluster
//! both are the node's address. [`GuestPeers`] passes every call through to the real
//! transport unchanged and only rewrites the target endpoint of a `SendToPeer` from the
//! forwarded address to the guest's, the way a cluster's routing would. The certificate
//! pin, the ticket and everything else are untouched, so pinning and tickets are tested
//! for real.

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
    /// Host-side `127.0.0.1:<forwarded>` → guest-side `127.0.0.1:<guest port>`.
    routes: HashMap<String, String>,
}

impl GuestPeers {
    /// Routes every forwarded agent port of `vm` to its guest port.
    pub fn new(vm: &ZfsVm, inner: Arc<dyn Agents>) -> Arc<Self> {
        let routes = vm
            .forwarded_ports()
            .iter()
            .map(|(guest, host)| (format!("127.0.0.1:{host}"), format!("127.0.0.1:{guest}")))
            .collect();
        Arc::new(Self { inner, routes })
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
                if let Some(guest) = self.routes.get(&send.peer.endpoint) {
                    send.peer.endpoint.clone_from(guest);
                }
                TransferCall::Send(send)
            }
            other => other,
        };
        self.inner.transfer(agent, epoch, call)
    }
}
