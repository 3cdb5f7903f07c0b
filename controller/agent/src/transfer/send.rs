//! The source's side: `SendToPeer` (from the controller) connects to the target agent over
//! pinned TLS first, then runs `zfs send` and streams it there with the ticket, and
//! answers with what moved or why it did not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::{Json, extract::State};
use hyper::body::Bytes;
use tidepool_api::names::SnapshotName;
use tidepool_wire::SendFlags;
use tidepool_wire::transfer::{
    IncrementalBase, SendToPeer, SendToPeerAnswer, StreamOutcome, TransferError, TransferReport,
    TransferSide, TransferStream,
};
use tidepool_zfs::{SendBase, SendRequest, SendStream, ZfsError};
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, oneshot};

use super::bucket::TokenBucket;
use super::codec::Encoder;
use super::peer::{self, PeerConnection};
use super::pipe::{ChannelBody, Meter, stalled};
use super::{error_chain, spawn_to_completion, stall_timeout, track_send};
use crate::operation::Refusal;
use crate::server::{AgentState, CommandRefused, Fenced};
use crate::zfs_ops::NodeZfs;

/// Largest chunk read from `zfs send` and put on the wire at once.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the reader and the connection.
const IN_FLIGHT: usize = 8;

pub(crate) async fn send_to_peer(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<SendToPeer>,
) -> Result<Json<SendToPeerAnswer>, CommandRefused> {
    let zfs = state.zfs().ok_or(CommandRefused::NoZfs)?.clone();
    let estimated = match check_stream(&state, &zfs, &op.stream).await? {
        Ok(estimated) => estimated,
        Err(failed) => return Ok(Json(failed)),
    };
    let answer = spawn_to_completion(run(state.clone(), zfs, op, estimated))
        .await
        .unwrap_or_else(|message| SendToPeerAnswer::Failed(TransferError::Interrupted { message }));
    let result = match &answer {
        SendToPeerAnswer::Sent(_) => "ok",
        SendToPeerAnswer::Failed(e) => e.as_str(),
    };
    super::count(&state, TransferSide::Source, result);
    Ok(Json(answer))
}

/// Checks every dataset a stream names against the roots. A resumed stream names its
/// dataset only inside the token: it is read from there (with the size left, returned
/// for progress) and checked like any other before anything is sent.
pub(crate) async fn check_stream(
    state: &AgentState,
    zfs: &NodeZfs,
    stream: &TransferStream,
) -> Result<Result<Option<u64>, SendToPeerAnswer>, CommandRefused> {
    for dataset in stream.datasets() {
        state.check_dataset(&dataset)?;
    }
    let TransferStream::Resume { token } = stream else {
        return Ok(Ok(None));
    };
    let estimate = match zfs.zfs().send_resume_estimate(token).await {
        Ok(e) => e,
        Err(e) => return Ok(Err(failed_on_source(zfs, &e))),
    };
    let snapshot = estimate
        .resume
        .as_ref()
        .and_then(|r| r.toname.as_deref())
        .and_then(|n| n.parse::<SnapshotName>().ok());
    let Some(snapshot) = snapshot else {
        return Ok(Err(SendToPeerAnswer::Failed(
            TransferError::InvalidRequest {
                message: "the resume token names no snapshot Tidepool can read".to_owned(),
            },
        )));
    };
    state.check_dataset(&snapshot.dataset())?;
    Ok(Ok(Some(estimate.total_bytes)))
}

pub(crate) fn failed_on_source(zfs: &NodeZfs, e: &ZfsError) -> SendToPeerAnswer {
    zfs.metrics()
        .zfs_errors
        .with_label_values(&[e.kind().as_str()])
        .inc();
    SendToPeerAnswer::Failed(TransferError::Zfs {
        side: TransferSide::Source,
        kind: e.kind().as_str().to_owned(),
        message: e.to_string(),
    })
}

/// The zfs layer's request for a stream (none for a resumed one: `send -t`).
pub(crate) fn send_request(
    stream: &TransferStream,
    flags: SendFlags,
) -> Result<Option<SendRequest>, String> {
    let (snapshot, base) = match stream {
        TransferStream::Full { snapshot } => (snapshot.clone(), SendBase::Full),
        TransferStream::Incremental {
            base,
            to,
            intermediates,
        } => {
            let base = match (base, intermediates) {
                (IncrementalBase::Snapshot { name }, true) => {
                    SendBase::WithIntermediates(name.clone())
                }
                (IncrementalBase::Snapshot { name }, false) => SendBase::Incremental(name.clone()),
                (IncrementalBase::Bookmark { name }, false) => SendBase::FromBookmark(name.clone()),
                // OpenZFS sends intermediates only from a snapshot.
                (IncrementalBase::Bookmark { .. }, true) => {
                    return Err("`-I` needs a snapshot as its base, not a bookmark".to_owned());
                }
            };
            (to.clone(), base)
        }
        TransferStream::Resume { .. } => return Ok(None),
    };
    Ok(Some(SendRequest {
        snapshot,
        base,
        flags,
    }))
}

async fn run(
    state: Arc<AgentState>,
    zfs: Arc<NodeZfs>,
    op: SendToPeer,
    mut estimated: Option<u64>,
) -> SendToPeerAnswer {
    let started = Instant::now();
    let node_name = state.node_name();
    let invalid =
        |message: String| SendToPeerAnswer::Failed(TransferError::InvalidRequest { message });
    if op.binding.source_node != node_name {
        return invalid(format!(
            "the ticket is bound to source node {:?}; this is {node_name:?}",
            op.binding.source_node
        ));
    }
    let request = match send_request(&op.stream, op.flags) {
        Ok(r) => r,
        Err(message) => return invalid(message),
    };
    let encoder = match Encoder::new(op.compression) {
        Ok(e) => e,
        Err(e) => return invalid(e.to_string()),
    };
    if let Some(r) = &request {
        // Only for progress: a failed estimate does not stop the send (which will say why
        // if it fails too).
        estimated = zfs.zfs().send_estimate(r).await.ok().map(|e| e.total_bytes);
    }
    // The target first: a certificate that is not the pinned one, or an unreachable peer,
    // costs the source nothing, and the ticket stays unused.
    let connection: PeerConnection<ChannelBody> =
        match peer::connect(&op.peer.endpoint, op.peer.fingerprint).await {
            Ok(c) => c,
            Err(e) => {
                return SendToPeerAnswer::Failed(TransferError::PeerUnreachable {
                    message: error_chain(&e),
                });
            }
        };
    let send = match (&request, &op.stream) {
        (Some(r), _) => zfs.zfs().send(r).await,
        (None, TransferStream::Resume { token }) => zfs.zfs().send_resume(token).await,
        (None, _) => return invalid("no stream to send".to_owned()),
    };
    let send = match send {
        Ok(s) => s,
        Err(e) => return failed_on_source(&zfs, &e),
    };
    let (tx, body) = ChannelBody::channel(IN_FLIGHT);
    let wire = Meter::new();
    let _tracked = track_send(&state, &op.binding, &send, &wire, estimated);
    let waiting_on_peer = Arc::new(AtomicBool::new(false));
    let all_sent = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel();
    let pump = tokio::spawn(pump(
        send,
        tx,
        Pump {
            encoder,
            limit: op.bandwidth_limit,
            wire: wire.clone(),
            waiting_on_peer: waiting_on_peer.clone(),
            all_sent: all_sent.clone(),
            stop: stopped,
        },
    ));
    let stall = stall_timeout(op.stall_timeout_seconds);
    let answered = {
        let posted = connection.post_stream(&op.ticket, &op.binding, op.compression, body);
        // Once everything is sent, the target's answer waits on its `zfs receive` to
        // finish, which the target bounds itself: no byte moving then is no stall.
        let stalled_mid_stream = async {
            stalled(&wire, stall).await;
            if all_sent.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            answered = posted => Some(answered),
            () = stalled_mid_stream => None,
        }
        // The request (and its body) is dropped here: the target sees the stream break.
    };
    let _ = stop.send(());
    let (send, pumped) = match pump.await {
        Ok(ended) => ended,
        Err(e) => {
            return SendToPeerAnswer::Failed(TransferError::Interrupted {
                message: format!("the send's reader task ended: {e}"),
            });
        }
    };
    let answer = match answered {
        None => {
            send.abort().await;
            let side = if waiting_on_peer.load(Ordering::Relaxed) {
                TransferSide::Target
            } else {
                TransferSide::Source
            };
            return SendToPeerAnswer::Failed(TransferError::Stalled {
                side,
                idle_seconds: stall.as_secs(),
            });
        }
        Some(answered) => answered,
    };
    // The source's own failure explains a broken stream better than what the target saw.
    if let Pumped::ReadFailed = pumped {
        return match send.finish().await {
            Err(e) => failed_on_source(&zfs, &e),
            Ok(_) => SendToPeerAnswer::Failed(TransferError::Interrupted {
                message: "reading zfs send failed".to_owned(),
            }),
        };
    }
    let (status, body) = match answer {
        Ok(r) => r,
        Err(e) => {
            send.abort().await;
            return SendToPeerAnswer::Failed(TransferError::Interrupted {
                message: error_chain(&e),
            });
        }
    };
    if !status.is_success() {
        send.abort().await;
        let (reason, message) = match serde_json::from_slice::<Refusal>(&body) {
            Ok(r) => (
                serde_json::to_value(r.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "Other".to_owned()),
                r.message,
            ),
            Err(_) => (
                "Other".to_owned(),
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        };
        return SendToPeerAnswer::Failed(TransferError::PeerRefused {
            status: status.as_u16(),
            reason,
            message,
        });
    }
    match serde_json::from_slice::<StreamOutcome>(&body) {
        Ok(StreamOutcome::Received {
            bytes_received,
            wire_bytes,
        }) => match send.finish().await {
            Ok(bytes_sent) => SendToPeerAnswer::Sent(TransferReport {
                bytes_sent,
                bytes_received,
                wire_bytes,
                estimated_bytes: estimated,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }),
            Err(e) => failed_on_source(&zfs, &e),
        },
        Ok(StreamOutcome::Failed(e)) => {
            send.abort().await;
            SendToPeerAnswer::Failed(e)
        }
        Err(e) => {
            send.abort().await;
            SendToPeerAnswer::Failed(TransferError::Interrupted {
                message: format!("the target's answer does not decode: {e}"),
            })
        }
    }
}

/// How the reader ended.
enum Pumped {
    /// `zfs send` reached its end and everything was handed to the connection.
    Done,
    /// Reading `zfs send` failed (its own failure or a stall): `finish` says why.
    ReadFailed,
    /// The connection stopped taking chunks, or the transfer was stopped.
    Stopped,
}

struct Pump {
    encoder: Encoder,
    limit: Option<u64>,
    wire: Meter,
    waiting_on_peer: Arc<AtomicBool>,
    all_sent: Arc<AtomicBool>,
    stop: oneshot::Receiver<()>,
}

/// Reads `zfs send`, encodes, paces and hands chunks to the connection until the end, a
/// failure or `stop`. Returns the send so its process is finished or aborted by the caller.
async fn pump(
    mut send: SendStream,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    mut p: Pump,
) -> (SendStream, Pumped) {
    // With a limit, chunks of at most a quarter second of it: the limiter's waits stay
    // short, so the stall watch never mistakes pacing for a stall.
    let chunk = match p.limit {
        Some(rate) => usize::try_from(rate / 4)
            .unwrap_or(CHUNK)
            .clamp(1024, CHUNK),
        None => CHUNK,
    };
    let mut bucket = p.limit.map(|rate| TokenBucket::new(rate, Instant::now()));
    let mut ended = false;
    while !ended {
        // Not zero-filled: `read_buf` writes only into what it returns.
        let mut buf = bytes::BytesMut::with_capacity(chunk);
        let read = tokio::select! {
            read = send.read_buf(&mut buf) => read,
            _ = &mut p.stop => return (send, Pumped::Stopped),
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return (send, Pumped::ReadFailed);
            }
        };
        let encoded = if n == 0 {
            ended = true;
            p.encoder.finish()
        } else {
            p.encoder.encode(buf.freeze())
        };
        let wire_chunk = match encoded {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return (send, Pumped::Stopped);
            }
        };
        if wire_chunk.is_empty() {
            continue;
        }
        if let Some(bucket) = bucket.as_mut() {
            let wait = bucket.take(wire_chunk.len(), Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = &mut p.stop => return (send, Pumped::Stopped),
                }
            }
        }
        let len = wire_chunk.len();
        p.waiting_on_peer.store(true, Ordering::Relaxed);
        let sent = tokio::select! {
            sent = tx.send(Ok(wire_chunk)) => sent,
            _ = &mut p.stop => return (send, Pumped::Stopped),
        };
        p.waiting_on_peer.store(false, Ordering::Relaxed);
        if sent.is_err() {
            return (send, Pumped::Stopped);
        }
        p.wire.add(len);
    }
    p.all_sent.store(true, Ordering::Relaxed);
    (send, Pumped::Done)
}
