//! One dataset's sync to an `objectStore` target, through the source node's agent: list
//! the store's streams, plan with [`store_plan::plan`] (the chain policy, the base on the
//! source), protect the base on the source (holds and bookmarks: the store cannot hold),
//! upload the next stream, and plan again; then target retention by whole chains.
//!
//! The planner of node and SSH targets is not used: its plans are `-I` chains from the
//! newest common snapshot, while a store's streams follow the chain policy (a full every
//! N, incrementals against the last full or the previous stream), and the store has no
//! inventory to plan divergence or resume from (a cut upload leaves no manifest: nothing
//! builds on it, and the next sync uploads that stream again).

use jiff::{SignedDuration, Timestamp};
use tidepool_agent::LeaderEpoch;
use tidepool_api::replication_policy::{
    IncrementalsAgainst, ObjectStoreTarget, ReplicationPolicySpec,
};
use tidepool_api::values::HoldTag;
use tidepool_api::{DatasetName, Owner};
use tidepool_objstore::chain::{ChainPolicy, FullEvery, IncrementalBase};
use tidepool_plan::DatasetInventory;
use tidepool_plan::replication::{Blocked, BlockedCode, ReplicationPlan};
use tidepool_wire::bookkeeping::{Bookkeeping, BookkeepingAction};
use tidepool_wire::objstore::{
    ObjectStoreAnswer, ObjectStoreOperation, ObjectStoreRequest, SendToObjectStore, StoreAccess,
    StoredStream,
};
use tidepool_wire::transfer::{SendToPeerAnswer, StepId, TransferBinding};
use tidepool_wire::{Request, Response, SendFlags, SnapshotRef};

use super::Parties;
use super::dataset::{DatasetSync, EarlyFailure, PolicySync, Replica};
use super::run::{Ran, StepFailed, transfer_reason};
use super::store_plan::{self, StoreInput, StorePlan, StoreSend};
use super::{MAX_ROUNDS, TargetEnd};
use crate::agents::{AgentEndpoint, AgentError, TransferAnswer, TransferCall};
use crate::inventories::Freshness;
use crate::node_run::inventory;
use crate::reasons;
use crate::reconcile::Context;

/// Streams per chain when `fullEvery` is left out.
pub const DEFAULT_FULL_EVERY: usize = 7;

/// The chain policy of a target.
pub fn chain_policy(target: &ObjectStoreTarget) -> ChainPolicy {
    let default =
        std::num::NonZeroUsize::new(DEFAULT_FULL_EVERY).unwrap_or(std::num::NonZeroUsize::MIN);
    let full_every = match &target.full_every {
        Some(f) => match (&f.age, f.streams) {
            (Some(age), _) => FullEvery::Age(
                SignedDuration::try_from(age.as_std()).unwrap_or(SignedDuration::MAX),
            ),
            (None, Some(n)) => FullEvery::Streams(
                usize::try_from(n)
                    .ok()
                    .and_then(std::num::NonZeroUsize::new)
                    .unwrap_or(default),
            ),
            (None, None) => FullEvery::Streams(default),
        },
        None => FullEvery::Streams(default),
    };
    ChainPolicy {
        full_every,
        incremental_from: match target.incrementals_against {
            IncrementalsAgainst::LastFull => IncrementalBase::LastFull,
            IncrementalsAgainst::Previous => IncrementalBase::Previous,
        },
    }
}

/// Where a policy's object-store calls go: through the source node's agent, which brings
/// the store's keys to the store.
pub(crate) struct Store<'a> {
    ctx: &'a Context,
    epoch: LeaderEpoch,
    via: &'a AgentEndpoint,
    access: &'a StoreAccess,
    label: &'a str,
}

impl PolicySync<'_> {
    /// Plans and uploads rounds for one dataset until the store is up to date (or a step
    /// fails), then deletes expired chains.
    pub(crate) async fn object_store_dataset(
        &self,
        replica: &Replica,
        target: &ObjectStoreTarget,
    ) -> DatasetSync {
        let Some(store) = Store::of(self.ctx, self.epoch, &self.parties.target) else {
            return DatasetSync::default();
        };
        let mut out = DatasetSync::default();
        let mut up_to_date = false;
        for round in 0..=MAX_ROUNDS {
            let (src, streams) = match store.read(self.parties, replica).await {
                Ok(r) => r,
                Err(f) => {
                    out.failure = Some(f.with(&out.ran));
                    break;
                }
            };
            let (plan, blocked) = plan_upload(
                self.spec,
                self.parties,
                self.send.hold_tag,
                &src,
                &streams,
                target,
            );
            out.target_newest = plan.newest_stored.as_ref().map(|c| c.creation);
            out.plan = Some(ReplicationPlan {
                steps: Vec::new(),
                divergence: None,
                blocked: blocked.clone(),
                newest_common: plan.newest_stored.clone(),
            });
            if blocked.is_some() {
                break;
            }
            if let Err(f) = self.bookkeep(&src, plan.anchors.clone(), &out.ran).await {
                out.failure = Some(f);
                break;
            }
            let Some(send) = plan.send.filter(|_| round < MAX_ROUNDS) else {
                up_to_date = round < MAX_ROUNDS;
                break;
            };
            match self.upload(&store, &src, &send, target, &out.ran).await {
                Ok(bytes) => {
                    out.ran.sends += 1;
                    out.ran.bytes += bytes;
                }
                Err(f) => {
                    self.ctx.metrics.error(f.reason);
                    out.failure = Some(f);
                    break;
                }
            }
        }
        if up_to_date
            && out.failure.is_none()
            && let Some(keep) = self.spec.retention.as_ref().and_then(|r| r.keep_last)
        {
            match self.expire(&store, replica, keep).await {
                Ok(n) => out.pruned = n,
                Err(f) => out.failure = Some(f.with(&out.ran)),
            }
        }
        out
    }

    /// Source-side holds, bookmarks and releases in one call.
    async fn bookkeep(
        &self,
        src: &DatasetInventory,
        actions: Vec<BookkeepingAction>,
        ran: &Ran,
    ) -> Result<(), StepFailed> {
        if actions.is_empty() {
            return Ok(());
        }
        let source = self.parties.pair().source;
        let failed = |e: AgentError| StepFailed {
            node: source.node.clone(),
            reason: e.reason(),
            message: e.chain(),
            resume_failed: None,
            ran: ran.clone(),
        };
        let request = Request::Bookkeeping(Bookkeeping {
            owner: self.parties.owner.clone(),
            actions,
        });
        match self.ctx.agents.call(source, self.epoch, request).await {
            Ok(Response::Bookkept(_)) => Ok(()),
            Ok(other) => Err(failed(AgentError::unexpected(
                &source.node,
                "Bookkeeping",
                &other,
            ))),
            Err(e) => {
                tracing::debug!(dataset = %src.dataset, "source bookkeeping failed");
                Err(failed(e))
            }
        }
    }

    /// Holds the snapshot on the source, then uploads it; the stream's bytes.
    async fn upload(
        &self,
        store: &Store<'_>,
        src: &DatasetInventory,
        send: &StoreSend,
        target: &ObjectStoreTarget,
        ran: &Ran,
    ) -> Result<u64, StepFailed> {
        let source = self.parties.pair().source;
        let failed = |node: &str, reason: &'static str, message: String| StepFailed {
            node: node.to_owned(),
            reason,
            message,
            resume_failed: None,
            ran: ran.clone(),
        };
        // Held first, as for node targets: once stored it is the next incremental's base.
        if let Ok(snapshot) = src.dataset.snapshot(&send.snapshot.name) {
            let hold = BookkeepingAction::Hold {
                snapshot: SnapshotRef {
                    snapshot,
                    guid: send.snapshot.guid,
                },
                tag: self.send.hold_tag.clone(),
            };
            self.bookkeep(src, vec![hold], ran).await?;
        }
        let text = format!(
            "{}-{:x}-{}",
            self.send.step_prefix,
            send.snapshot.guid,
            Timestamp::now().as_millisecond()
        );
        let step: StepId = text
            .parse()
            .map_err(|e| failed(&source.node, reasons::AGENT_REFUSED, format!("{e}")))?;
        let raw = src.encrypted && self.spec.send.raw;
        let o = &self.spec.send;
        let request = SendToObjectStore {
            stream: send.stream.clone(),
            flags: SendFlags {
                raw,
                compressed: o.compressed,
                large_blocks: o.large_blocks,
                embedded_data: o.embedded_data,
                properties: o.properties,
            },
            store: store.access.clone(),
            snapshot: send.snapshot.clone(),
            created: send.created,
            parent: send.parent.clone(),
            // A raw stream is ciphertext already.
            age_recipient: target
                .encryption
                .as_ref()
                .filter(|_| !raw)
                .map(|e| e.age_recipient.clone()),
            binding: TransferBinding {
                owner: self.parties.owner.clone(),
                step: step.clone(),
                source_node: source.node.clone(),
            },
            bandwidth_limit: self.send.bandwidth_limit,
            stall_timeout_seconds: None,
        };
        tracing::info!(policy = %self.parties.policy, stream = ?send.stream, why = %send.why, "uploading to the object store");
        let call = TransferCall::SendObjectStore(Box::new(request));
        let sending = self.ctx.agents.transfer(source, self.epoch, call);
        let answer = self
            .send
            .progress
            .around(
                self.ctx,
                self.epoch,
                source,
                self.send.owner,
                &step,
                sending,
            )
            .await;
        match answer {
            Ok(TransferAnswer::Sent(SendToPeerAnswer::Sent(report))) => Ok(report.bytes_sent),
            Ok(TransferAnswer::Sent(SendToPeerAnswer::Failed(e))) => {
                let node = match &e {
                    tidepool_wire::transfer::TransferError::PeerUnreachable { .. } => store.label,
                    _ => &source.node,
                };
                Err(failed(node, transfer_reason(&e), e.to_string()))
            }
            Ok(_) => Err(failed(
                &source.node,
                reasons::AGENT_REFUSED,
                "the source answered an upload with something else".into(),
            )),
            Err(e) => Err(failed(&source.node, e.reason(), e.chain())),
        }
    }

    /// Deletes whole chains beyond the newest `keep`; how many streams went.
    async fn expire(
        &self,
        store: &Store<'_>,
        replica: &Replica,
        keep: i32,
    ) -> Result<u32, EarlyFailure> {
        let keep_chains = u32::try_from(keep).unwrap_or(1).max(1);
        match store
            .call(
                &replica.source,
                ObjectStoreOperation::Expire { keep_chains },
            )
            .await?
        {
            ObjectStoreAnswer::Expired { deleted } => {
                if !deleted.is_empty() {
                    tracing::info!(policy = %self.parties.policy, ?deleted, "expired object-store streams");
                }
                Ok(u32::try_from(deleted.len()).unwrap_or(u32::MAX))
            }
            other => Err(store.unexpected("Expired", &other)),
        }
    }
}

/// The next upload of one dataset and the source bookkeeping around it
/// ([`store_plan::plan`] with the policy's selection and chain policy), or why nothing
/// may be uploaded. Pure; the sync and `explain` both call it.
pub(crate) fn plan_upload(
    spec: &ReplicationPolicySpec,
    parties: &Parties,
    hold_tag: &HoldTag,
    src: &DatasetInventory,
    streams: &[StoredStream],
    target: &ObjectStoreTarget,
) -> (StorePlan, Option<Blocked>) {
    let selection = &spec.source.snapshots;
    let owner = parties.selection_owner.as_ref();
    let selects = |s: &tidepool_wire::SnapshotInfo| {
        owner.is_none_or(|o| s.owner.as_ref() == Some(o))
            && selection
                .name_prefix
                .as_deref()
                .is_none_or(|p| s.name.as_str().starts_with(p))
    };
    let plan = store_plan::plan(
        &StoreInput {
            source: src,
            streams,
            chain: chain_policy(target),
            selects: &selects,
            policy: &parties.policy,
            tag: hold_tag,
        },
        Timestamp::now(),
    );
    // Plaintext of an encrypted source may reach the store only encrypted with age.
    let blocked = (src.encrypted && !spec.send.raw && target.encryption.is_none()).then(|| {
        Blocked {
            code: BlockedCode::PlaintextOfEncryptedSource,
            message: format!(
                "source {} is encrypted, send.raw is false and the object store has no encryption.ageRecipient: the store would hold its plaintext",
                src.dataset
            ),
        }
    });
    (plan, blocked)
}

impl<'a> Store<'a> {
    /// The store of an `objectStore` target; `None` for another kind.
    pub(crate) fn of(ctx: &'a Context, epoch: LeaderEpoch, target: &'a TargetEnd) -> Option<Self> {
        match target {
            TargetEnd::ObjectStore { via, access, label } => Some(Store {
                ctx,
                epoch,
                via,
                access,
                label,
            }),
            _ => None,
        }
    }

    /// The source dataset's inventory and the store's streams of it.
    pub(crate) async fn read(
        &self,
        parties: &Parties,
        replica: &Replica,
    ) -> Result<(DatasetInventory, Vec<StoredStream>), EarlyFailure> {
        let source = parties.pair().source;
        let (pool, listed) = futures::join!(
            inventory(
                self.ctx,
                source,
                self.epoch,
                replica.source.pool(),
                Freshness::AfterAsking,
            ),
            self.call(&replica.source, ObjectStoreOperation::List)
        );
        let pool = pool.map_err(|p| EarlyFailure {
            node: source.node.clone(),
            reason: p.reason(),
            message: p.message(),
        })?;
        let src = pool
            .dataset(&replica.source)
            .cloned()
            .unwrap_or_else(|| DatasetInventory::absent(replica.source.clone()));
        match listed? {
            ObjectStoreAnswer::Listed { streams } => Ok((src, streams)),
            other => Err(self.unexpected("Listed", &other)),
        }
    }

    /// Deletes the streams of `dataset` whose manifests name `owner` (a policy deleted
    /// with `deletionPolicy: Delete`); how many.
    pub(crate) async fn delete_owned(
        &self,
        dataset: &DatasetName,
        owner: &Owner,
    ) -> Result<usize, EarlyFailure> {
        let operation = ObjectStoreOperation::DeleteOwned {
            owner: owner.clone(),
        };
        match self.call(dataset, operation).await? {
            ObjectStoreAnswer::Expired { deleted } => Ok(deleted.len()),
            other => Err(self.unexpected("Expired", &other)),
        }
    }

    async fn call(
        &self,
        dataset: &DatasetName,
        operation: ObjectStoreOperation,
    ) -> Result<ObjectStoreAnswer, EarlyFailure> {
        let request = ObjectStoreRequest {
            store: self.access.clone(),
            dataset: dataset.clone(),
            operation,
        };
        let call = TransferCall::ObjectStore(Box::new(request));
        match self.ctx.agents.transfer(self.via, self.epoch, call).await {
            Ok(TransferAnswer::Store(ObjectStoreAnswer::Failed { message })) => Err(EarlyFailure {
                node: self.label.to_owned(),
                reason: reasons::TARGET_UNREACHABLE,
                message,
            }),
            Ok(TransferAnswer::Store(answer)) => Ok(answer),
            Ok(_) => Err(EarlyFailure {
                node: self.via.node.clone(),
                reason: reasons::AGENT_REFUSED,
                message: "the source agent answered an object-store call with something else"
                    .into(),
            }),
            Err(e) => Err(EarlyFailure {
                node: self.via.node.clone(),
                reason: e.reason(),
                message: e.chain(),
            }),
        }
    }

    fn unexpected(&self, asked: &str, got: &ObjectStoreAnswer) -> EarlyFailure {
        EarlyFailure {
            node: self.via.node.clone(),
            reason: reasons::AGENT_REFUSED,
            message: format!("asked the object store for {asked}, got {got:?}"),
        }
    }
}
