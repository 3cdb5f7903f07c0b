//! [`Bookkeeping`] on the node's pools: the replication planner's holds, releases,
//! bookmarks, claims, rotations and aborts. Each action is checked as a request first
//! (only Tidepool's hold tags and bookmarks, a rotation only beside its dataset), then
//! against a fresh read of the GUID it names; repeating an action that already happened is
//! success, so a step interrupted half way is simply planned and run again.

use std::sync::Arc;

use axum::{Json, extract::State};
use tidepool_api::names::{BookmarkName, SnapshotName};
use tidepool_api::{OWNER_PROPERTY, values::HoldTag};
use tidepool_wire::bookkeeping::{Bookkeeping, BookkeepingAction, Bookkept};
use tidepool_wire::operation::{OperationError, Owner, Response, SnapshotRef};
use tidepool_zfs::{ErrorKind, PropertyName, PropertySource, PropertyValue, ZfsError};

use crate::operation::Operation;
use crate::server::{AgentState, CommandRefused, Fenced};
use crate::zfs_ops::{NodeZfs, node, to_completion};

impl Operation for Bookkeeping {
    const PATH: &'static str = "/v1/replication/bookkeeping";
    type Output = Response;
}

pub(crate) async fn bookkeeping(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<Bookkeeping>,
) -> Result<Json<Response>, CommandRefused> {
    for action in &op.actions {
        for d in action.datasets() {
            state.check_dataset(&d)?;
        }
    }
    let zfs = node(&state)?.clone();
    Ok(Json(
        to_completion(async move { zfs.bookkeep(&op).await }).await,
    ))
}

/// Why one action did not run.
enum Failure {
    Refused(String),
    Zfs(ZfsError),
}

impl From<ZfsError> for Failure {
    fn from(e: ZfsError) -> Self {
        Failure::Zfs(e)
    }
}

fn property(name: &str) -> Result<PropertyName, Failure> {
    name.parse()
        .map_err(|e| Failure::Refused(format!("property {name}: {e}")))
}

impl NodeZfs {
    /// Runs the actions in order; the first failure ends the request.
    pub async fn bookkeep(&self, op: &Bookkeeping) -> Response {
        let mut done = 0u32;
        for action in &op.actions {
            let result = match action.check() {
                Ok(()) => self.bookkeep_one(&op.owner, action).await,
                Err(message) => Err(Failure::Refused(message)),
            };
            self.mark_dirty(action.datasets());
            match result {
                Ok(()) => done += 1,
                Err(Failure::Zfs(e)) => return self.zfs_failed(&e),
                Err(Failure::Refused(message)) => {
                    return Response::Failed(OperationError::Zfs {
                        kind: ErrorKind::InvalidRequest.as_str().to_owned(),
                        message: format!("{} refused: {message}", action.as_str()),
                    });
                }
            }
        }
        Response::Bookkept(Bookkept { actions: done })
    }

    async fn bookkeep_one(&self, owner: &Owner, action: &BookkeepingAction) -> Result<(), Failure> {
        let zfs = self.zfs();
        match action {
            BookkeepingAction::Hold { snapshot, tag } => {
                self.same_guid(snapshot).await?;
                let snap = std::slice::from_ref(&snapshot.snapshot);
                if let Err(e) = zfs.hold(tag, snap).await
                    && !self.has_hold(&snapshot.snapshot, tag).await?
                {
                    return Err(e.into());
                }
                Ok(())
            }
            BookkeepingAction::Release { snapshot, tag } => {
                if !self.exists_with_guid(snapshot).await? {
                    return Ok(());
                }
                let snap = std::slice::from_ref(&snapshot.snapshot);
                if let Err(e) = zfs.release(tag, snap).await
                    && self.has_hold(&snapshot.snapshot, tag).await?
                {
                    return Err(e.into());
                }
                Ok(())
            }
            BookkeepingAction::Bookmark { snapshot, bookmark } => {
                self.same_guid(snapshot).await?;
                let source = tidepool_zfs::BookmarkSource::Snapshot(snapshot.snapshot.clone());
                if let Err(e) = zfs.bookmark(&source, bookmark).await
                    && self.bookmark_guid(bookmark).await? != Some(snapshot.guid)
                {
                    return Err(e.into());
                }
                Ok(())
            }
            BookkeepingAction::DestroyBookmark { bookmark, guid } => {
                match self.bookmark_guid(bookmark).await? {
                    None => Ok(()),
                    Some(found) if found != *guid => Err(Failure::Refused(format!(
                        "{bookmark} is of the snapshot with guid {found}, not {guid}"
                    ))),
                    Some(_) => Ok(zfs.destroy_bookmark(bookmark).await?),
                }
            }
            BookkeepingAction::Claim { snapshots } => self.claim(owner, snapshots).await,
            BookkeepingAction::RotateAside { from, to } => {
                Ok(zfs.rename_dataset(from, to, true).await?)
            }
            BookkeepingAction::AbortReceive { target } => Ok(zfs.receive_abort(target).await?),
        }
    }

    /// The snapshot exists and still has the GUID the plan saw.
    async fn same_guid(&self, snapshot: &SnapshotRef) -> Result<(), Failure> {
        if self.exists_with_guid(snapshot).await? {
            Ok(())
        } else {
            Err(Failure::Refused(format!(
                "{} no longer exists",
                snapshot.snapshot
            )))
        }
    }

    /// Whether the snapshot exists with the GUID the plan saw (a different GUID: refused).
    async fn exists_with_guid(&self, snapshot: &SnapshotRef) -> Result<bool, Failure> {
        let guid = property("guid")?;
        match self.zfs().get_one(&guid, &snapshot.snapshot).await {
            Ok(Some(v)) if v.parse::<u64>().ok() == Some(snapshot.guid) => Ok(true),
            Ok(found) => Err(Failure::Refused(format!(
                "{} now has guid {}, not {}: planned against an older inventory",
                snapshot.snapshot,
                found.unwrap_or_default(),
                snapshot.guid
            ))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn has_hold(&self, snapshot: &SnapshotName, tag: &HoldTag) -> Result<bool, Failure> {
        let holds = self.zfs().holds(std::slice::from_ref(snapshot)).await?;
        Ok(holds.iter().any(|h| h.tag == tag.as_str()))
    }

    async fn bookmark_guid(&self, bookmark: &BookmarkName) -> Result<Option<u64>, Failure> {
        let guid = property("guid")?;
        match self.zfs().get_one(&guid, bookmark).await {
            Ok(v) => Ok(v.and_then(|v| v.parse().ok())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the owner on each snapshot that has none set locally; one this owner already
    /// claimed is left as it is, one that does not exist (any more) is skipped, and another
    /// owner's local claim or a different GUID refuses the whole action before anything is
    /// set.
    async fn claim(&self, owner: &Owner, snapshots: &[SnapshotRef]) -> Result<(), Failure> {
        let value: PropertyValue = owner
            .as_str()
            .parse()
            .map_err(|e| Failure::Refused(format!("owner: {e}")))?;
        let owner_property = property(OWNER_PROPERTY)?;
        let guid = property("guid")?;
        let props = [guid.clone(), owner_property.clone()];
        let names: Vec<SnapshotName> = snapshots.iter().map(|s| s.snapshot.clone()).collect();
        let entries = match self.zfs().get(&props, &names).await {
            Ok(entries) => entries,
            // One name that is gone fails the whole `zfs get`: read them one at a time.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let mut entries = Vec::new();
                for name in &names {
                    match self.zfs().get(&props, std::slice::from_ref(name)).await {
                        Ok(found) => entries.extend(found),
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                entries
            }
            Err(e) => return Err(e.into()),
        };
        let find = |s: &SnapshotName, p: &PropertyName| {
            entries
                .iter()
                .find(|e| e.name.as_str() == s.as_str() && e.property == p.as_str())
        };
        let mut to_claim = Vec::new();
        for s in snapshots {
            // A snapshot that is not there is not claimed, and nothing is lost: an `-I`
            // stream brings only the intermediates the source still had when it was sent,
            // and the source's retention may prune one between the plan and the send.
            let Some(found) = find(&s.snapshot, &guid) else {
                continue;
            };
            let found_guid = found.value_opt().and_then(|v| v.parse().ok());
            if found_guid != Some(s.guid) {
                return Err(Failure::Refused(format!(
                    "{} does not have guid {}",
                    s.snapshot, s.guid
                )));
            }
            match find(&s.snapshot, &owner_property) {
                Some(e) if e.source == PropertySource::Local => {
                    if e.value_opt() != Some(owner.as_str()) {
                        return Err(Failure::Refused(format!(
                            "{} is already claimed by {}",
                            s.snapshot, e.value
                        )));
                    }
                }
                _ => to_claim.push(&s.snapshot),
            }
        }
        for s in to_claim {
            self.zfs()
                .set(s, &[(owner_property.clone(), value.clone())])
                .await?;
        }
        Ok(())
    }
}
