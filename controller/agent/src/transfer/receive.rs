//! The target's side: `PrepareReceive` (from the controller) registers the receive and
//! mints its ticket; the stream route (from the source agent, authenticated by the ticket
//! alone) redeems it and pipes the body into exactly that receive.

use std::sync::Arc;

use axum::{
    Json,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, header::CONTENT_ENCODING};
use http_body_util::BodyExt as _;
use jiff::Timestamp;
use tidepool_wire::operation::{OperationError, RequestError};
use tidepool_wire::transfer::{
    PrepareReceive, PrepareReceiveAnswer, ReceivePrepared, StreamOutcome, TransferError,
    TransferSide, WireCompression,
};
use tokio::io::AsyncWriteExt as _;

use super::peer::{OWNER_HEADER, SOURCE_NODE_HEADER, STEP_HEADER, TICKET_HEADER, ZSTD_ENCODING};
use super::pipe::Meter;
use super::ticket::{IssueError, PresentedBinding, ReceiveGrant};
use super::{InFlight, codec, error_chain, spawn_to_completion, stall_timeout, track};
use crate::server::{AgentState, CommandRefused, FencedCommand};
use crate::zfs_ops::NodeZfs;

pub(crate) async fn prepare_receive(
    State(state): State<Arc<AgentState>>,
    FencedCommand { epoch, operation }: FencedCommand<PrepareReceive>,
) -> Result<Json<PrepareReceiveAnswer>, CommandRefused> {
    let op = operation;
    let target = op.receive.target();
    state.check_dataset(target)?;
    let zfs = state.zfs().ok_or(CommandRefused::NoZfs)?;
    if !zfs.pools().contains(&target.pool()) {
        return Ok(Json(PrepareReceiveAnswer::Failed(
            OperationError::InvalidRequest(RequestError::UnknownPool {
                pool: target.pool(),
            }),
        )));
    }
    let grant = ReceiveGrant {
        receive: op.receive,
        binding: op.binding,
        epoch,
        stall: stall_timeout(op.stall_timeout_seconds),
    };
    // The clock is read here, at the edge.
    match state.transfers().tickets.issue(grant, Timestamp::now()) {
        Ok((ticket, expires_at)) => Ok(Json(PrepareReceiveAnswer::Prepared(ReceivePrepared {
            ticket,
            expires_at,
        }))),
        Err(e @ IssueError::Full(_)) => Err(CommandRefused::Busy(e)),
        Err(e @ IssueError::Random) => Ok(Json(PrepareReceiveAnswer::Failed(
            OperationError::Unknown {
                message: e.to_string(),
            },
        ))),
    }
}

/// `POST /v1/stream`: outside the TokenReview layer; the ticket is the credential.
pub(crate) async fn stream(State(state): State<Arc<AgentState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let admitted = admit(&state, &parts.headers, Timestamp::now());
    let (grant, compression) = match admitted {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    let Some(zfs) = state.zfs().cloned() else {
        return CommandRefused::NoZfs.into_response();
    };
    // In a task of its own: whatever happens to this connection, the receive ends with an
    // explicit finish or abort, never by being dropped half way.
    let outcome = spawn_to_completion(receive(state.clone(), zfs, grant, body, compression))
        .await
        .unwrap_or_else(|message| StreamOutcome::Failed(TransferError::Interrupted { message }));
    let result = match &outcome {
        StreamOutcome::Received { .. } => "ok",
        StreamOutcome::Failed(e) => e.as_str(),
    };
    super::count(&state, TransferSide::Target, result);
    Json(outcome).into_response()
}

/// Every check before anything runs: encoding, ticket and binding, the fence, the roots.
fn admit(
    state: &AgentState,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<(ReceiveGrant, WireCompression), CommandRefused> {
    let compression = match headers.get(CONTENT_ENCODING).map(|v| v.to_str()) {
        None | Some(Ok("identity")) => WireCompression::None,
        Some(Ok(ZSTD_ENCODING)) if codec::ZSTD_AVAILABLE => WireCompression::Zstd,
        Some(other) => {
            return Err(CommandRefused::UnsupportedEncoding(
                other.unwrap_or("(not text)").chars().take(40).collect(),
            ));
        }
    };
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let presented = PresentedBinding {
        owner: text(OWNER_HEADER).unwrap_or(""),
        step: text(STEP_HEADER).unwrap_or(""),
        source_node: text(SOURCE_NODE_HEADER).unwrap_or(""),
    };
    let grant = state
        .transfers()
        .tickets
        .redeem(text(TICKET_HEADER), presented, now)?;
    state.fence().check_current(grant.epoch)?;
    state.check_dataset(grant.receive.target())?;
    Ok((grant, compression))
}

/// Pipes the body into the granted receive, aborting both when no byte arrives (or none is
/// taken) for the grant's stall timeout.
async fn receive(
    state: Arc<AgentState>,
    zfs: Arc<NodeZfs>,
    grant: ReceiveGrant,
    mut body: Body,
    compression: WireCompression,
) -> StreamOutcome {
    let target = grant.receive.target().clone();
    let failed_zfs = |e: &tidepool_zfs::ZfsError| {
        zfs.metrics()
            .zfs_errors
            .with_label_values(&[e.kind().as_str()])
            .inc();
        StreamOutcome::Failed(TransferError::Zfs {
            side: TransferSide::Target,
            kind: e.kind().as_str().to_owned(),
            message: e.to_string(),
        })
    };
    let mut sink = match zfs.zfs().receive(&grant.receive).await {
        Ok(sink) => sink,
        Err(e) => return failed_zfs(&e),
    };
    let mut decoder = match codec::Decoder::new(compression) {
        Ok(d) => d,
        Err(e) => {
            sink.abort().await;
            return StreamOutcome::Failed(TransferError::Interrupted {
                message: format!("starting the decoder: {e}"),
            });
        }
    };
    let wire = Meter::new();
    let _tracked = track(
        &state,
        InFlight {
            owner: grant.binding.owner.clone(),
            step: grant.binding.step.clone(),
            side: TransferSide::Target,
            bytes: sink.progress(),
            wire: wire.clone(),
            estimated: None,
            started_at: Timestamp::now(),
        },
    );
    let stall = grant.stall;
    let idle_seconds = stall.as_secs();
    let outcome = loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                sink.abort().await;
                break StreamOutcome::Failed(TransferError::Stalled {
                    side: TransferSide::Source,
                    idle_seconds,
                });
            }
            Ok(None) => {
                if let Err(e) = decoder.finish() {
                    sink.abort().await;
                    break StreamOutcome::Failed(TransferError::Interrupted {
                        message: format!("the stream ended inside a compressed frame: {e}"),
                    });
                }
                break finish(sink, wire.bytes(), &failed_zfs).await;
            }
            Ok(Some(Err(e))) => {
                sink.abort().await;
                break StreamOutcome::Failed(TransferError::Interrupted {
                    message: format!("the stream broke: {}", error_chain(&e)),
                });
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        wire.add(data.len());
        let decoded = match decoder.decode(&data) {
            Ok(decoded) => decoded,
            Err(e) => {
                sink.abort().await;
                break StreamOutcome::Failed(TransferError::Interrupted {
                    message: format!("the stream does not decode: {e}"),
                });
            }
        };
        match tokio::time::timeout(stall, sink.write_all(&decoded)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // The receive stopped taking bytes: its exit tells why (a mismatch, no
                // space...).
                break match sink.finish().await {
                    Err(e) => failed_zfs(&e),
                    Ok(_) => StreamOutcome::Failed(TransferError::Interrupted {
                        message: "zfs receive ended before the stream did".to_owned(),
                    }),
                };
            }
            Err(_) => {
                sink.abort().await;
                break StreamOutcome::Failed(TransferError::Stalled {
                    side: TransferSide::Target,
                    idle_seconds,
                });
            }
        }
    };
    zfs.mark_dirty([target]);
    outcome
}

async fn finish(
    mut sink: tidepool_zfs::ReceiveSink,
    wire_bytes: u64,
    failed_zfs: &impl Fn(&tidepool_zfs::ZfsError) -> StreamOutcome,
) -> StreamOutcome {
    if let Err(e) = sink.flush().await {
        tracing::debug!(error = %e, "flushing into zfs receive");
    }
    match sink.finish().await {
        Ok(bytes_received) => StreamOutcome::Received {
            bytes_received,
            wire_bytes,
        },
        Err(e) => failed_zfs(&e),
    }
}
