//! `RestoreDrill`: proves that the newest stored chain of a dataset restores. The chain is
//! received into a scratch dataset marked as it lands ([`tidepool_zfs::Scratch`]), every
//! chunk checked against its SHA-256 and every snapshot against its manifest's GUID, and
//! the scratch destroyed whatever the outcome. A chain encrypted with age is checked chunk
//! by chunk only: the agent holds the recipient, never an identity.

use std::sync::Arc;

use axum::{Json, extract::State};
use tidepool_objstore::manifest::Encryption;
use tidepool_objstore::{Damage, restore as stored};
use tidepool_wire::objstore::{DrillReport, DrillVerdict, RestoreDrill};
use tidepool_zfs::{Executor, Scratch, Zfs};

use super::restore::{Destination, RestoreError, StoredChain, restore_chain, restore_path};
use crate::operation::Operation;
use crate::server::{AgentState, CommandRefused, Fenced};
use crate::transfer::{error_chain, spawn_to_completion};

impl Operation for RestoreDrill {
    const PATH: &'static str = "/v1/object-store/drill";
    type Output = DrillReport;
}

pub(crate) async fn restore_drill(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<RestoreDrill>,
) -> Result<Json<DrillReport>, CommandRefused> {
    state.check_dataset(&op.dataset)?;
    state.check_dataset(&op.scratch)?;
    let zfs = state.zfs().ok_or(CommandRefused::NoZfs)?.clone();
    let scratch = match Scratch::new(op.scratch.clone(), op.owner.as_str()) {
        Ok(s) => s,
        Err(e) => return Ok(Json(report(DrillVerdict::ScratchRefused, e.to_string()))),
    };
    let (store, prefix) = match super::open(&op.store) {
        Ok(s) => s,
        Err(message) => return Ok(Json(report(DrillVerdict::StoreUnreachable, message))),
    };
    let dataset = op.dataset.clone();
    let answer = spawn_to_completion(async move {
        let chain = StoredChain {
            store: &store,
            prefix: &prefix,
            dataset: &op.dataset,
            snapshot: None,
        };
        drill(zfs.zfs(), &chain, &scratch).await
    })
    .await
    .unwrap_or_else(|message| report(DrillVerdict::RestoreFailed, message));
    tracing::info!(%dataset, verdict = ?answer.verdict, streams = ?answer.streams, "restore drill");
    Ok(Json(answer))
}

fn report(verdict: DrillVerdict, message: String) -> DrillReport {
    DrillReport {
        verdict,
        streams: Vec::new(),
        snapshot: None,
        guid: None,
        bytes: 0,
        received: false,
        object: None,
        message,
    }
}

/// The drill itself; the scratch is gone afterwards unless it was refused.
pub async fn drill<E: Executor>(
    zfs: &Zfs<E>,
    chain: &StoredChain<'_>,
    scratch: &Scratch,
) -> DrillReport {
    // A scratch left by a drill that did not finish goes first; anything else there stays.
    match zfs.destroy_scratch(scratch).await {
        Ok(Ok(_)) => {}
        Ok(Err(refused)) => return report(DrillVerdict::ScratchRefused, refused.to_string()),
        Err(e) => return report(DrillVerdict::RestoreFailed, error_chain(&e)),
    }
    let (path, snapshot) = match restore_path(chain).await {
        Ok(p) => p,
        Err(e) => return failed(&e),
    };
    let streams: Vec<String> = path.iter().map(|s| s.dir_name()).collect();
    let mut out = match encrypted(chain, &path).await {
        Ok(true) => checksums_only(chain, &path).await,
        Ok(false) => {
            match restore_chain(zfs, chain, &path, None, &Destination::Scratch(scratch)).await {
                Ok(r) => DrillReport {
                    verdict: DrillVerdict::Passed,
                    streams: r.streams,
                    snapshot: Some(r.snapshot),
                    guid: Some(r.guid),
                    bytes: r.bytes,
                    received: true,
                    object: None,
                    message: String::new(),
                },
                Err(e) => failed(&e),
            }
        }
        Err(e) => failed(&e),
    };
    out.snapshot.get_or_insert(snapshot);
    if out.streams.is_empty() {
        out.streams = streams;
    }
    if out.verdict == DrillVerdict::Passed {
        out.message = format!(
            "{} stream(s) up to {} {}",
            out.streams.len(),
            out.snapshot.as_ref().map_or("", |s| s.as_str()),
            if out.received {
                "received and matched by GUID, every chunk's SHA-256 checked"
            } else {
                "encrypted with age: every chunk's SHA-256 checked (the agent holds no identity to receive it)"
            }
        );
    }
    match zfs.destroy_scratch(scratch).await {
        Ok(Ok(_)) => out,
        Ok(Err(refused)) => report(DrillVerdict::ScratchRefused, refused.to_string()),
        Err(e) => {
            let mut out = out;
            out.message = format!(
                "{}; destroying the scratch dataset {} failed: {}",
                out.message,
                scratch.dataset(),
                error_chain(&e)
            );
            out
        }
    }
}

/// Whether the chain's streams are age-encrypted (read from the first manifest).
async fn encrypted(
    chain: &StoredChain<'_>,
    path: &[tidepool_objstore::StreamName],
) -> Result<bool, RestoreError> {
    let Some(first) = path.first() else {
        return Ok(false);
    };
    let manifest = stored::read_manifest(chain.store, &chain.key(first)).await?;
    Ok(matches!(manifest.encryption, Encryption::Age { .. }))
}

async fn checksums_only(
    chain: &StoredChain<'_>,
    path: &[tidepool_objstore::StreamName],
) -> DrillReport {
    let mut out = report(DrillVerdict::Passed, String::new());
    for name in path {
        match stored::verify(chain.store, &chain.key(name)).await {
            Ok(m) => {
                out.bytes += m.stored_bytes;
                out.guid = Some(m.snapshot.guid);
                out.streams.push(name.dir_name());
            }
            Err(e) => return failed(&RestoreError::Store(e)),
        }
    }
    out
}

fn failed(e: &RestoreError) -> DrillReport {
    let (verdict, object) = match e {
        RestoreError::NothingStored { .. } => (DrillVerdict::NothingStored, None),
        RestoreError::NoChain { .. } => (DrillVerdict::ObjectMissing, None),
        RestoreError::Store(s) => (
            match s.damage() {
                Damage::Missing => DrillVerdict::ObjectMissing,
                Damage::Corrupt => DrillVerdict::ChunkCorrupt,
                Damage::None => DrillVerdict::StoreUnreachable,
            },
            s.object().map(str::to_owned),
        ),
        RestoreError::Exists { .. } => (DrillVerdict::ScratchRefused, None),
        RestoreError::Receive { .. }
        | RestoreError::GuidMismatch { .. }
        | RestoreError::Zfs(_)
        | RestoreError::Name(_) => (DrillVerdict::RestoreFailed, None),
    };
    // A missing object's error repeats the server's whole answer at every level.
    let message = match (verdict, &object) {
        (DrillVerdict::ObjectMissing, Some(o)) => format!("{o} is missing from the store"),
        _ => error_chain(e),
    };
    DrillReport {
        object,
        ..report(verdict, message)
    }
}
