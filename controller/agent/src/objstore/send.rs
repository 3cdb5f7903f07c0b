//! `SendToObjectStore`: `zfs send` on this node, staged into the store as chunk objects
//! (`tidepool_objstore::upload::stage`), then — only once `zfs send` has exited 0 — the
//! manifest is written (`Staged::commit`). A send that fails, is killed or stalls leaves
//! no manifest: its chunks are deleted (best effort), and a listing shows whatever is
//! left as an unfinished upload that nothing builds on. Answered like a send to an agent
//! ([`SendToPeerAnswer`]), with the same progress, pacing and stall watch.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Instant;

use axum::{Json, extract::State};
use tidepool_objstore::naming::{StreamKey, StreamKind, StreamName};
use tidepool_objstore::{Guids, UploadOptions};
use tidepool_wire::objstore::SendToObjectStore;
use tidepool_wire::transfer::{
    SendToPeerAnswer, TransferError, TransferReport, TransferSide, TransferStream,
};
use tidepool_zfs::SendStream;
use tokio::io::{AsyncWriteExt as _, DuplexStream};

use crate::operation::Operation;
use crate::server::{AgentState, CommandRefused, Fenced};
use crate::transfer::bucket::paced_copy;
use crate::transfer::pipe::{Meter, stalled};
use crate::transfer::send::{check_stream, failed_on_source, send_request};
use crate::transfer::{count, spawn_to_completion, stall_timeout, track_send};
use crate::zfs_ops::NodeZfs;

impl Operation for SendToObjectStore {
    const PATH: &'static str = "/v1/transfers/send-object-store";
    type Output = SendToPeerAnswer;
}

/// The pipe between the send and the chunker.
const PIPE: usize = 1 << 20;

pub(crate) async fn send_to_object_store(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<SendToObjectStore>,
) -> Result<Json<SendToPeerAnswer>, CommandRefused> {
    let zfs = state.zfs().ok_or(CommandRefused::NoZfs)?.clone();
    if let Err(failed) = check_stream(&state, &zfs, &op.stream).await? {
        return Ok(Json(failed));
    }
    let answer = spawn_to_completion(run(state.clone(), zfs, op))
        .await
        .unwrap_or_else(|message| SendToPeerAnswer::Failed(TransferError::Interrupted { message }));
    let result = match &answer {
        SendToPeerAnswer::Sent(_) => "ok",
        SendToPeerAnswer::Failed(e) => e.as_str(),
    };
    count(&state, TransferSide::Source, result);
    Ok(Json(answer))
}

fn invalid(message: String) -> SendToPeerAnswer {
    SendToPeerAnswer::Failed(TransferError::InvalidRequest { message })
}

fn store_failed(message: String) -> SendToPeerAnswer {
    SendToPeerAnswer::Failed(TransferError::PeerUnreachable { message })
}

/// The stream's key, GUIDs and upload options, checked against the stream itself.
fn prepare(op: &SendToObjectStore) -> Result<(StreamKey, Guids, UploadOptions), String> {
    let (dataset, kind) =
        match (&op.stream, &op.parent) {
            (TransferStream::Full { snapshot }, None) => (snapshot.dataset(), StreamKind::Full),
            (
                TransferStream::Incremental {
                    to,
                    intermediates: false,
                    ..
                },
                Some(parent),
            ) => (
                to.dataset(),
                StreamKind::Incremental {
                    parent: parent.name.clone(),
                },
            ),
            _ => return Err(
                "an object-store stream is a full, or an incremental (`-i`) with its parent named"
                    .into(),
            ),
        };
    let to = match &op.stream {
        TransferStream::Full { snapshot } => snapshot,
        TransferStream::Incremental { to, .. } => to,
        TransferStream::Resume { .. } => return Err("object-store streams are not resumed".into()),
    };
    if to.short() != op.snapshot.name {
        return Err(format!(
            "the stream sends {to}, the request names {}",
            op.snapshot.name
        ));
    }
    let (_, prefix) = super::open(&op.store)?;
    let name =
        StreamName::new(op.created, op.snapshot.name.clone(), kind).map_err(|e| e.to_string())?;
    let key = StreamKey {
        prefix,
        dataset,
        name,
    };
    let encrypt_to = op
        .age_recipient
        .as_deref()
        .map(age::x25519::Recipient::from_str)
        .transpose()
        .map_err(|e| format!("the age recipient: {e}"))?;
    let options = UploadOptions {
        encrypt_to,
        owner: Some(op.binding.owner.to_string()),
        ..UploadOptions::default()
    };
    let guids = Guids {
        snapshot: op.snapshot.guid,
        parent: op.parent.as_ref().map(|p| p.guid),
    };
    Ok((key, guids, options))
}

async fn run(state: Arc<AgentState>, zfs: Arc<NodeZfs>, op: SendToObjectStore) -> SendToPeerAnswer {
    let started = Instant::now();
    let (key, guids, options) = match prepare(&op) {
        Ok(p) => p,
        Err(message) => return invalid(message),
    };
    let (store, _) = match super::open(&op.store) {
        Ok(s) => s,
        Err(message) => return invalid(message),
    };
    let request = match send_request(&op.stream, op.flags) {
        Ok(Some(r)) => r,
        Ok(None) => return invalid("no stream to send".to_owned()),
        Err(message) => return invalid(message),
    };
    // Only for progress: a failed estimate does not stop the send.
    let estimated = zfs
        .zfs()
        .send_estimate(&request)
        .await
        .ok()
        .map(|e| e.total_bytes);
    let mut send = match zfs.zfs().send(&request).await {
        Ok(s) => s,
        Err(e) => return failed_on_source(&zfs, &e),
    };
    let wire = Meter::new();
    let _tracked = track_send(&state, &op.binding, &send, &wire, estimated);
    let stall = stall_timeout(op.stall_timeout_seconds);
    let (writer, reader) = tokio::io::duplex(PIPE);
    let staging = tidepool_objstore::upload::stage(&store, &key, guids, reader, &options);
    let pumping = pump(&mut send, writer, op.bandwidth_limit, &wire);
    let outcome = tokio::select! {
        (staged, pumped) = async { tokio::join!(staging, pumping) } => Some((staged, pumped)),
        () = stalled(&wire, stall) => None,
    };
    let Some((staged, _pumped)) = outcome else {
        // The stage future is dropped with its chunks' uploads; a listing shows what was
        // stored as an unfinished upload, which retention removes.
        send.abort().await;
        return SendToPeerAnswer::Failed(TransferError::Stalled {
            side: TransferSide::Source,
            idle_seconds: stall.as_secs(),
        });
    };
    // The end of the stream proves nothing: `zfs send` killed or failed also ends it.
    let sent = send.finish().await;
    let staged = match (staged, sent) {
        (Ok(staged), Ok(_)) => staged,
        (Ok(staged), Err(e)) => {
            staged.abandon().await;
            return failed_on_source(&zfs, &e);
        }
        (Err(e), Err(se)) => {
            tracing::warn!(stream = %key, error = %e, "upload failed with the send");
            return failed_on_source(&zfs, &se);
        }
        (Err(e), Ok(_)) => return store_failed(format!("uploading {key}: {e}")),
    };
    match staged.commit().await {
        Ok(manifest) => SendToPeerAnswer::Sent(TransferReport {
            bytes_sent: manifest.stream_bytes,
            bytes_received: manifest.stored_bytes,
            wire_bytes: wire.bytes(),
            estimated_bytes: estimated,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
        Err(e) => store_failed(format!("writing the manifest of {key}: {e}")),
    }
}

/// Moves the stream into the chunker's pipe, paced to `limit` bytes per second, then
/// closes the pipe (the chunker's end of input).
async fn pump(
    send: &mut SendStream,
    mut pipe: DuplexStream,
    limit: Option<u64>,
    wire: &Meter,
) -> std::io::Result<()> {
    paced_copy(send, &mut pipe, limit, wire).await?;
    pipe.shutdown().await
}
