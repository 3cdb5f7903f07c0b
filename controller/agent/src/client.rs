//! The controller's side: calls one agent over TLS pinned to the fingerprint its `ZfsNode`
//! publishes, with the controller's projected token.

use std::time::Duration;

use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{
    fence::LeaderEpoch,
    fingerprint::CertificateFingerprint,
    operation::{Command, Operation, Refusal},
    tls::{TlsSetupError, pinned_client_config},
};

/// How long one call may take, connection and handshake included, unless configured.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("{endpoint:?} is not a `host:port` endpoint")]
    Endpoint {
        endpoint: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("{endpoint:?} is more than `host:port`")]
    NotHostPort { endpoint: String },
}

/// Why a call did not return the operation's output.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The agent answered with a typed refusal; nothing ran.
    #[error("the agent refused the command ({status}): {}", refusal.message)]
    Refused {
        status: StatusCode,
        refusal: Refusal,
    },
    /// Connecting, the TLS handshake (a certificate that is not the pinned one ends here)
    /// or sending failed.
    #[error("could not reach the agent")]
    Transport(#[source] hyper_util::client::legacy::Error),
    #[error("reading the agent's response")]
    Body(#[source] hyper::Error),
    #[error("the call took longer than {0:?}")]
    TimedOut(Duration),
    #[error("the token cannot be sent in a header")]
    Token(#[source] http::header::InvalidHeaderValue),
    #[error("building the request")]
    Request(#[source] http::Error),
    #[error("encoding the command")]
    Encode(#[source] serde_json::Error),
    #[error("the agent answered {status} with a body that is not the operation's output")]
    Decode {
        status: StatusCode,
        #[source]
        source: serde_json::Error,
    },
}

/// A client for one agent.
#[derive(Clone, Debug)]
pub struct AgentClient {
    endpoint: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl AgentClient {
    /// `endpoint` is the `host:port` the agent publishes; `pin` its certificate fingerprint.
    pub fn new(endpoint: &str, pin: CertificateFingerprint) -> Result<Self, ClientSetupError> {
        let base: Uri = format!("https://{endpoint}/").parse().map_err(|source| {
            ClientSetupError::Endpoint {
                endpoint: endpoint.to_owned(),
                source,
            }
        })?;
        // Only `host:port`: a path, user info or query smuggled into the endpoint would
        // change what the request means.
        let authority = base.authority().map(|a| a.as_str().to_owned());
        if authority.as_deref() != Some(endpoint) || endpoint.contains('@') {
            return Err(ClientSetupError::NotHostPort {
                endpoint: endpoint.to_owned(),
            });
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(pinned_client_config(pin)?)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            endpoint: endpoint.to_owned(),
            http: Client::builder(TokioExecutor::new()).build(connector),
            timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `operation` on the agent as the leader of `epoch`, authenticated by `token`.
    pub async fn call<O: Operation>(
        &self,
        token: &str,
        epoch: LeaderEpoch,
        operation: O,
    ) -> Result<O::Output, CallError> {
        let authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(CallError::Token)?;
        self.send(Some(authorization), &Command { epoch, operation })
            .await
    }

    /// Sends `command` with the `Authorization` header exactly as given (or none): the
    /// building block of [`Self::call`], public so refusals can be exercised.
    pub async fn send<O: Operation>(
        &self,
        authorization: Option<HeaderValue>,
        command: &Command<O>,
    ) -> Result<O::Output, CallError> {
        let body = serde_json::to_vec(command).map_err(CallError::Encode)?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{}{}", self.endpoint, O::PATH))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(CallError::Request)?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(CallError::Transport)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(CallError::Body)?
                .to_bytes();
            Ok::<_, CallError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CallError::TimedOut(self.timeout))??;
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|source| CallError::Decode { status, source })
        } else {
            let refusal = serde_json::from_slice(&body)
                .map_err(|source| CallError::Decode { status, source })?;
            Err(CallError::Refused { status, refusal })
        }
    }
}
