//! `SendToSsh`: `zfs send` on this node piped into `zfs receive` on the far host, through
//! the system `ssh` client, with the bandwidth limit, progress and stall watch of a send
//! to an agent. The answer is the same [`SendToPeerAnswer`].

use std::sync::Arc;
use std::time::Instant;

use axum::{Json, extract::State};
use tidepool_wire::ssh::SendToSsh;
use tidepool_wire::transfer::{
    SendToPeerAnswer, TransferError, TransferReport, TransferSide, TransferStream,
};
use tidepool_zfs::{ReceiveSink, SendStream, ZfsError};

use super::Remote;
use crate::operation::Operation;
use crate::server::{AgentState, CommandRefused, Fenced};
use crate::transfer::bucket::paced_copy;
use crate::transfer::pipe::{Meter, stalled};
use crate::transfer::send::{check_stream, failed_on_source, send_request};
use crate::transfer::{count, spawn_to_completion, stall_timeout, track_send};
use crate::zfs_ops::NodeZfs;

impl Operation for SendToSsh {
    const PATH: &'static str = "/v1/transfers/send-ssh";
    type Output = SendToPeerAnswer;
}

pub(crate) async fn send_to_ssh(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<SendToSsh>,
) -> Result<Json<SendToPeerAnswer>, CommandRefused> {
    let zfs = state.zfs().ok_or(CommandRefused::NoZfs)?.clone();
    let estimated = match check_stream(&state, &zfs, &op.stream).await? {
        Ok(estimated) => estimated,
        Err(failed) => return Ok(Json(failed)),
    };
    let invalid =
        |message: String| SendToPeerAnswer::Failed(TransferError::InvalidRequest { message });
    let remote = match Remote::open(&state, &op.via) {
        Ok(r) => r,
        Err(message) => return Ok(Json(invalid(message))),
    };
    remote.check(op.receive.target())?;
    let answer = spawn_to_completion(run(state.clone(), zfs, remote, op, estimated))
        .await
        .unwrap_or_else(|message| SendToPeerAnswer::Failed(TransferError::Interrupted { message }));
    let result = match &answer {
        SendToPeerAnswer::Sent(_) => "ok",
        SendToPeerAnswer::Failed(e) => e.as_str(),
    };
    count(&state, TransferSide::Source, result);
    Ok(Json(answer))
}

async fn run(
    state: Arc<AgentState>,
    zfs: Arc<NodeZfs>,
    remote: Remote,
    op: SendToSsh,
    mut estimated: Option<u64>,
) -> SendToPeerAnswer {
    let started = Instant::now();
    let request = match send_request(&op.stream, op.flags) {
        Ok(r) => r,
        Err(message) => {
            return SendToPeerAnswer::Failed(TransferError::InvalidRequest { message });
        }
    };
    if let Some(r) = &request {
        // Only for progress: a failed estimate does not stop the send.
        estimated = zfs.zfs().send_estimate(r).await.ok().map(|e| e.total_bytes);
    }
    // The far side first: a host that cannot be reached or refuses the login costs the
    // source nothing.
    let sink = match remote.zfs.zfs().receive(&op.receive).await {
        Ok(sink) => sink,
        Err(e) => return failed_on_target(&remote, &e),
    };
    let send = match (&request, &op.stream) {
        (Some(r), _) => zfs.zfs().send(r).await,
        (None, TransferStream::Resume { token }) => zfs.zfs().send_resume(token).await,
        (None, _) => {
            sink.abort().await;
            return SendToPeerAnswer::Failed(TransferError::InvalidRequest {
                message: "no stream to send".to_owned(),
            });
        }
    };
    let send = match send {
        Ok(s) => s,
        Err(e) => {
            sink.abort().await;
            return failed_on_source(&zfs, &e);
        }
    };
    let wire = Meter::new();
    let _tracked = track_send(&state, &op.binding, &send, &wire, estimated);
    let stall = stall_timeout(op.stall_timeout_seconds);
    let mut ends = Ends { send, sink };
    let copied = tokio::select! {
        copied = ends.copy(op.bandwidth_limit, &wire) => Some(copied),
        () = stalled(&wire, stall) => None,
    };
    let Ends { send, sink } = ends;
    match copied {
        None => {
            let side = stalled_side(&send, &sink);
            send.abort().await;
            sink.abort().await;
            SendToPeerAnswer::Failed(TransferError::Stalled {
                side,
                idle_seconds: stall.as_secs(),
            })
        }
        Some(copied) => {
            let (sent, received) = tokio::join!(send.finish(), sink.finish());
            match (copied, sent, received) {
                (_, Ok(bytes_sent), Ok(bytes_received)) => SendToPeerAnswer::Sent(TransferReport {
                    bytes_sent,
                    bytes_received,
                    wire_bytes: wire.bytes(),
                    estimated_bytes: estimated,
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                }),
                // The receive's reason (a mismatch, no space, a refused login) explains more
                // than a short stream does, unless the send failed first.
                (_, Err(se), Err(re))
                    if re.kind() == tidepool_zfs::ErrorKind::StreamInterrupted =>
                {
                    failed_on_source(&zfs, &se)
                }
                (_, _, Err(re)) => failed_on_target(&remote, &re),
                (_, Err(se), Ok(_)) => failed_on_source(&zfs, &se),
            }
        }
    }
}

/// Which side a stall is on: the one whose zfs process stopped moving bytes.
fn stalled_side(send: &SendStream, sink: &ReceiveSink) -> TransferSide {
    if sink.progress().bytes() < send.progress().bytes() {
        TransferSide::Target
    } else {
        TransferSide::Source
    }
}

fn failed_on_target(remote: &Remote, e: &ZfsError) -> SendToPeerAnswer {
    remote
        .zfs
        .metrics()
        .zfs_errors
        .with_label_values(&[e.kind().as_str()])
        .inc();
    SendToPeerAnswer::Failed(TransferError::Zfs {
        side: TransferSide::Target,
        kind: e.kind().as_str().to_owned(),
        message: e.to_string(),
    })
}

struct Ends {
    send: SendStream,
    sink: ReceiveSink,
}

impl Ends {
    /// Moves the stream, paced to `limit` bytes per second; an error ends it (the
    /// processes' exits then say why).
    async fn copy(&mut self, limit: Option<u64>, wire: &Meter) -> std::io::Result<()> {
        paced_copy(&mut self.send, &mut self.sink, limit, wire).await
    }
}
