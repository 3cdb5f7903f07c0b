//! The agent's HTTPS server: TLS with the generated certificate, then for every route the
//! same order of checks — the caller is the controller (TokenReview), the command is from
//! the current leader (epoch), its datasets are inside the roots — before anything runs.
//!
//! One route is different: the stream route (`POST /v1/stream`), where another agent
//! delivers a replication stream. It is outside the TokenReview layer and authenticated by
//! a one-time ticket alone (`transfer::ticket`); it is added after that layer on purpose,
//! and is the only route so added.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRequest, Request, State, rejection::JsonRejection},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
};
use http::{StatusCode, header::AUTHORIZATION};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use jiff::Timestamp;
use tidepool_api::names::DatasetName;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::{
    auth::{AuthConfig, AuthError, Authenticator},
    bookkeeping,
    fence::{EpochFence, StaleEpoch},
    fingerprint::CertificateFingerprint,
    operation::{Command, Operation, Ping, Pong, Refusal, RefusalReason},
    roots::{DatasetRoots, OutsideRoots},
    tls::{ServingIdentity, TlsSetupError},
    transfer::{self, Transfers, peer::STREAM_PATH, ticket::TicketRefused},
    zfs_ops::{self, NodeZfs},
};
use tidepool_wire::bookkeeping::Bookkeeping;
use tidepool_wire::objstore::{ObjectStoreRequest, RestoreDrill, SendToObjectStore};
use tidepool_wire::operation::{DestroySnapshots, InventoryRequest, TakeSnapshots};
use tidepool_wire::ssh::{RemoteRequest, SendToSsh};
use tidepool_wire::transfer::{ListTransfers, PrepareReceive, SendToPeer};

/// A client that opens a connection and never finishes the handshake (or never sends its
/// headers) must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What an agent is started with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The node this agent serves (`NODE_NAME` from the downward API).
    pub node_name: String,
    pub listen: SocketAddr,
    pub dataset_roots: DatasetRoots,
    pub auth: AuthConfig,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("binding {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a command was refused. Each variant maps to one HTTP status and one
/// [`RefusalReason`]; nothing has run when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum CommandRefused {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    StaleEpoch(#[from] StaleEpoch),
    #[error(transparent)]
    OutsideRoots(#[from] OutsideRoots),
    #[error("the request is not a command of this operation: {0}")]
    BadRequest(#[source] JsonRejection),
    /// An agent started without zfs (the transport's own tests) has no zfs operations.
    #[error("this agent serves no zfs operations")]
    NoZfs,
    /// The stream route's credential was refused.
    #[error(transparent)]
    Ticket(#[from] TicketRefused),
    /// The agent holds as many tickets as it will; try again once some are used.
    #[error(transparent)]
    Busy(transfer::ticket::IssueError),
    #[error("stream encoding {0:?} is not supported")]
    UnsupportedEncoding(String),
}

impl CommandRefused {
    fn status_and_reason(&self) -> (StatusCode, RefusalReason) {
        match self {
            Self::Auth(AuthError::NotTheController { .. }) => {
                (StatusCode::FORBIDDEN, RefusalReason::Forbidden)
            }
            Self::Auth(AuthError::Review(_) | AuthError::ReviewWithoutStatus) => (
                StatusCode::SERVICE_UNAVAILABLE,
                RefusalReason::AuthUnavailable,
            ),
            Self::Auth(_) => (StatusCode::UNAUTHORIZED, RefusalReason::Unauthenticated),
            Self::StaleEpoch(_) => (StatusCode::CONFLICT, RefusalReason::StaleEpoch),
            Self::OutsideRoots(_) => (StatusCode::FORBIDDEN, RefusalReason::OutsideRoots),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, RefusalReason::BadRequest),
            Self::NoZfs => (StatusCode::NOT_IMPLEMENTED, RefusalReason::Other),
            // The reasons stay the transport's fixed set (the controller matches on it); the
            // route and the message tell a ticket from a token.
            Self::Ticket(TicketRefused::BindingMismatch { .. }) => {
                (StatusCode::FORBIDDEN, RefusalReason::Forbidden)
            }
            Self::Ticket(_) => (StatusCode::UNAUTHORIZED, RefusalReason::Unauthenticated),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, RefusalReason::Other),
            Self::UnsupportedEncoding(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                RefusalReason::BadRequest,
            ),
        }
    }
}

impl IntoResponse for CommandRefused {
    fn into_response(self) -> Response {
        let (status, reason) = self.status_and_reason();
        tracing::info!(?reason, error = %self, "command refused");
        let mut response = (
            status,
            Json(Refusal {
                reason,
                message: self.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED && !matches!(self, Self::Ticket(_)) {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AgentState {
    node_name: String,
    roots: DatasetRoots,
    fence: EpochFence,
    authenticator: Authenticator,
    zfs: Option<Arc<NodeZfs>>,
    transfers: Transfers,
}

impl AgentState {
    /// The check every operation makes on every dataset it names, before building argv.
    pub fn check_dataset(&self, dataset: &DatasetName) -> Result<(), OutsideRoots> {
        self.roots.check(dataset)
    }

    pub fn roots(&self) -> &DatasetRoots {
        &self.roots
    }

    /// The node's zfs side, when the agent was started with one.
    pub fn zfs(&self) -> Option<&Arc<NodeZfs>> {
        self.zfs.as_ref()
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn fence(&self) -> &EpochFence {
        &self.fence
    }

    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }
}

/// The operation of a request whose epoch the fence admitted. Extracting it is the only way
/// a handler gets its operation, so no handler can skip the fence.
pub struct Fenced<O>(pub O);

impl<O: Operation> FromRequest<Arc<AgentState>> for Fenced<O> {
    type Rejection = CommandRefused;

    async fn from_request(
        request: Request,
        state: &Arc<AgentState>,
    ) -> Result<Self, Self::Rejection> {
        let FencedCommand { operation, .. } = FencedCommand::from_request(request, state).await?;
        Ok(Self(operation))
    }
}

/// As [`Fenced`], keeping the admitted epoch for a handler that records it (a ticket is
/// refused once a newer leader than the one that brokered it has spoken).
pub struct FencedCommand<O> {
    pub epoch: crate::fence::LeaderEpoch,
    pub operation: O,
}

impl<O: Operation> FromRequest<Arc<AgentState>> for FencedCommand<O> {
    type Rejection = CommandRefused;

    async fn from_request(
        request: Request,
        state: &Arc<AgentState>,
    ) -> Result<Self, Self::Rejection> {
        let Json(command) = Json::<Command<O>>::from_request(request, state)
            .await
            .map_err(CommandRefused::BadRequest)?;
        state.fence.admit(command.epoch)?;
        Ok(Self {
            epoch: command.epoch,
            operation: command.operation,
        })
    }
}

async fn require_controller(
    State(state): State<Arc<AgentState>>,
    request: Request,
    next: Next,
) -> Response {
    // The clock is read here, at the edge; the authenticator takes `now` as a parameter.
    let now = Timestamp::now();
    match state
        .authenticator
        .authenticate(request.headers().get(AUTHORIZATION), now)
        .await
    {
        Ok(()) => next.run(request).await,
        Err(refused) => CommandRefused::Auth(refused).into_response(),
    }
}

async fn ping(State(state): State<Arc<AgentState>>, Fenced(Ping {}): Fenced<Ping>) -> Json<Pong> {
    Json(Pong {
        node_name: state.node_name.clone(),
    })
}

/// The routes: the controller's operations, with authentication in front of every one of
/// them, and then the stream route, whose credential is a ticket (see the module doc).
pub fn router(state: Arc<AgentState>) -> Router {
    let mut routes = Router::new().route(Ping::PATH, post(ping));
    if state.zfs.is_some() {
        routes = routes
            .route(TakeSnapshots::PATH, post(zfs_ops::take_snapshots))
            .route(DestroySnapshots::PATH, post(zfs_ops::destroy_snapshots))
            .route(InventoryRequest::PATH, post(zfs_ops::inventory))
            .route(Bookkeeping::PATH, post(bookkeeping::bookkeeping))
            .route(PrepareReceive::PATH, post(transfer::prepare_receive))
            .route(SendToPeer::PATH, post(transfer::send_to_peer))
            .route(ListTransfers::PATH, post(transfer::list_transfers))
            .route(RemoteRequest::PATH, post(crate::remote::remote))
            .route(SendToSsh::PATH, post(crate::remote::send::send_to_ssh))
            .route(
                ObjectStoreRequest::PATH,
                post(crate::objstore::object_store),
            )
            .route(
                SendToObjectStore::PATH,
                post(crate::objstore::send::send_to_object_store),
            )
            .route(
                RestoreDrill::PATH,
                post(crate::objstore::drill::restore_drill),
            );
    }
    let mut routes = routes.route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_controller,
    ));
    // After the layer: `route_layer` wraps only the routes added before it.
    if state.zfs.is_some() {
        routes = routes.route(STREAM_PATH, post(transfer::stream));
    }
    routes.with_state(state)
}

/// A running agent server; dropping it stops the server and its connections.
#[derive(Debug)]
pub struct RunningAgent {
    local_addr: SocketAddr,
    fingerprint: CertificateFingerprint,
    state: Arc<AgentState>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    /// Generates the certificate, binds `config.listen` and serves until dropped.
    /// `client` is the agent's own kube client, used for TokenReviews.
    pub async fn start(config: AgentConfig, client: kube::Client) -> Result<Self, StartError> {
        Self::start_with_zfs(config, client, None).await
    }

    /// As [`Self::start`], serving the zfs operations of `zfs` as well.
    pub async fn start_with_zfs(
        config: AgentConfig,
        client: kube::Client,
        zfs: Option<Arc<NodeZfs>>,
    ) -> Result<Self, StartError> {
        let identity = ServingIdentity::generate(vec![config.node_name.clone()])?;
        let acceptor = TlsAcceptor::from(Arc::new(identity.server_config()?));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    address: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            address: config.listen,
            source,
        })?;
        let state = Arc::new(AgentState {
            node_name: config.node_name,
            roots: config.dataset_roots,
            fence: EpochFence::new(),
            authenticator: Authenticator::new(client, config.auth),
            zfs,
            transfers: Transfers::default(),
        });
        let task = tokio::spawn(serve(listener, acceptor, router(state.clone())));
        Ok(Self {
            local_addr,
            fingerprint: identity.fingerprint(),
            state,
            task,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The fingerprint to publish in the node's `ZfsNode`.
    pub fn fingerprint(&self) -> CertificateFingerprint {
        self.fingerprint
    }

    pub fn state(&self) -> &Arc<AgentState> {
        &self.state
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    // Owned here so that aborting this task drops, and so aborts, every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(serve_connection(tcp, peer, acceptor.clone(), router.clone()));
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
        .await;
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests;
