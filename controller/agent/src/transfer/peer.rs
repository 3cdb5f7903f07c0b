//! The source's side of the stream route: one HTTP/1.1 connection to the target agent over
//! TLS pinned to the fingerprint the controller handed over (the target's `ZfsNode`), and
//! one `POST /v1/stream` whose body is the send stream and whose headers carry the ticket
//! and the binding. A certificate that is not the pinned one fails the handshake, before
//! a header (or the ticket) is written.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Bytes};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tidepool_wire::CertificateFingerprint;
use tidepool_wire::transfer::{TransferBinding, TransferTicket, WireCompression};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::{TlsSetupError, pinned_client_config};

/// The stream route on every agent.
pub const STREAM_PATH: &str = "/v1/stream";
/// The ticket, 64 hex digits.
pub const TICKET_HEADER: &str = "tidepool-ticket";
/// The binding the presenter claims (compared with the one the ticket was minted for).
pub const OWNER_HEADER: &str = "tidepool-owner";
pub const STEP_HEADER: &str = "tidepool-step";
pub const SOURCE_NODE_HEADER: &str = "tidepool-source-node";
/// `Content-Encoding` value of a zstd-compressed stream.
pub const ZSTD_ENCODING: &str = "zstd";

/// How long connecting and the TLS and HTTP handshakes may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the target could not be reached, or answered nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{endpoint:?} is not a `host:port` endpoint")]
    Endpoint { endpoint: String },
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("connecting to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    /// Includes a certificate other than the pinned one.
    #[error("TLS handshake with {endpoint}")]
    Handshake {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {endpoint} took longer than {timeout:?}")]
    TimedOut { endpoint: String, timeout: Duration },
    #[error("HTTP with the target agent")]
    Http(#[source] hyper::Error),
    #[error("building the stream request")]
    Request(#[source] http::Error),
    #[error("a header value")]
    Header(#[source] http::header::InvalidHeaderValue),
}

/// The host of a `host:port` endpoint, refusing anything more (a path, user info, query).
fn host_of(endpoint: &str) -> Result<String, PeerError> {
    let refuse = || PeerError::Endpoint {
        endpoint: endpoint.chars().take(200).collect(),
    };
    let uri: Uri = format!("https://{endpoint}/")
        .parse()
        .map_err(|_| refuse())?;
    let authority = uri.authority().ok_or_else(refuse)?;
    if authority.as_str() != endpoint || endpoint.contains('@') || authority.port().is_none() {
        return Err(refuse());
    }
    Ok(authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned())
}

/// An open, pinned HTTP/1.1 connection to a target agent.
pub struct PeerConnection<B> {
    endpoint: String,
    sender: SendRequest<B>,
}

impl<B> std::fmt::Debug for PeerConnection<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Connects to `endpoint` and completes TLS (trusting only `pin`) and the HTTP handshake.
pub async fn connect<B>(
    endpoint: &str,
    pin: CertificateFingerprint,
) -> Result<PeerConnection<B>, PeerError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let host = host_of(endpoint)?;
    let mut tls = pinned_client_config(pin)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));
    // Names are not checked (the pin is the identity); an IP or a DNS name both parse.
    let name = ServerName::try_from(host)
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let opened = async {
        let tcp = TcpStream::connect(endpoint)
            .await
            .map_err(|source| PeerError::Connect {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        // Stream chunks are large; small writes of headers should not wait for them.
        let _ = tcp.set_nodelay(true);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|source| PeerError::Handshake {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(PeerError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "stream connection ended with an error");
            }
        });
        Ok::<_, PeerError>(sender)
    };
    let sender = tokio::time::timeout(CONNECT_TIMEOUT, opened)
        .await
        .map_err(|_| PeerError::TimedOut {
            endpoint: endpoint.to_owned(),
            timeout: CONNECT_TIMEOUT,
        })??;
    Ok(PeerConnection {
        endpoint: endpoint.to_owned(),
        sender,
    })
}

impl<B> PeerConnection<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Posts `body` as the stream for `ticket`, claiming `binding`; returns the target's
    /// status and body once it answers (it may answer before the body is all sent: a
    /// refused ticket, a failed receive).
    pub async fn post_stream(
        mut self,
        ticket: &TransferTicket,
        binding: &TransferBinding,
        compression: WireCompression,
        body: B,
    ) -> Result<(StatusCode, Bytes), PeerError> {
        let value = |s: &str| HeaderValue::from_str(s).map_err(PeerError::Header);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(STREAM_PATH)
            .header(header::HOST, value(&self.endpoint)?)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(TICKET_HEADER, value(&ticket.reveal())?)
            .header(OWNER_HEADER, value(binding.owner.as_str())?)
            .header(STEP_HEADER, value(binding.step.as_str())?)
            .header(SOURCE_NODE_HEADER, value(&binding.source_node)?);
        if compression == WireCompression::Zstd {
            request = request.header(header::CONTENT_ENCODING, ZSTD_ENCODING);
        }
        let request = request.body(body).map_err(PeerError::Request)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(PeerError::Http)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(PeerError::Http)?
            .to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_and_port_make_an_endpoint() {
        assert_eq!(host_of("10.0.0.2:7443").ok().as_deref(), Some("10.0.0.2"));
        assert_eq!(
            host_of("node-b.example:7443").ok().as_deref(),
            Some("node-b.example")
        );
        assert_eq!(host_of("[::1]:7443").ok().as_deref(), Some("::1"));
        for bad in [
            "10.0.0.2",
            "u@h:1",
            "h:1/x",
            "h:1?q",
            "",
            "h:1#f",
            "https://h:1",
        ] {
            assert!(host_of(bad).is_err(), "{bad:?}");
        }
    }
}
