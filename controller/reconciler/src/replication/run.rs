//! Running one plan's steps on the two agents: the bookkeeping of each side in one call
//! per run of consecutive steps, and each send brokered as a ticket from the target
//! (`PrepareReceive`) handed to the source (`SendToPeer`). The controller never carries
//! the bytes. The first failure stops the rest: the next plan, made from the inventories,
//! sees what did happen.

use jiff::Timestamp;
use tidepool_agent::LeaderEpoch;
use tidepool_api::Owner;
use tidepool_api::values::HoldTag;
use tidepool_plan::replication::{Action, Base, ResumeFailure, SendStep, Side, Step, Stream};
use tidepool_wire::bookkeeping::{Bookkeeping, BookkeepingAction};
use tidepool_wire::ssh::SendToSsh;
use tidepool_wire::transfer::{
    IncrementalBase, PeerTarget, PrepareReceive, PrepareReceiveAnswer, SendToPeer,
    SendToPeerAnswer, StepId, TransferBinding, TransferError, TransferStream, WireCompression,
};
use tidepool_wire::{Request, Response, SnapshotRef};

use super::progress::ProgressReport;
use super::target::TargetEnd;
use crate::agents::{AgentEndpoint, AgentError, TransferAnswer, TransferCall};
use crate::reconcile::Context;

/// The source agent and the target of a policy.
pub struct Ends<'a> {
    pub source: &'a AgentEndpoint,
    pub target: &'a TargetEnd,
}

impl Ends<'_> {
    pub(crate) fn node(&self, side: Side) -> &str {
        match side {
            Side::Source => &self.source.node,
            Side::Target => self.target.node(),
        }
    }

    pub(crate) async fn call(
        &self,
        ctx: &Context,
        epoch: LeaderEpoch,
        side: Side,
        request: Request,
    ) -> Result<Response, AgentError> {
        match side {
            Side::Source => ctx.agents.call(self.source, epoch, request).await,
            Side::Target => self.target.call(ctx, epoch, request).await,
        }
    }
}

/// What a run of steps did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ran {
    pub sends: u32,
    pub bytes: u64,
    /// Where a diverged target was kept.
    pub rotated_to: Option<String>,
}

impl Ran {
    /// Adds what a later run did.
    pub fn add(&mut self, later: &Ran) {
        self.sends += later.sends;
        self.bytes += later.bytes;
        if later.rotated_to.is_some() {
            self.rotated_to.clone_from(&later.rotated_to);
        }
    }
}

/// Why a step failed, where, and whether it was a resume that failed (the next plan then
/// aborts the token instead of resuming it again).
#[derive(Debug, Clone)]
pub struct StepFailed {
    pub node: String,
    pub reason: &'static str,
    pub message: String,
    pub resume_failed: Option<ResumeFailure>,
    pub ran: Ran,
}

/// Everything a send needs besides the step.
pub struct SendContext<'a> {
    pub owner: &'a Owner,
    /// The policy's hold tag: the snapshot a send brings is held on the source before the
    /// send starts (see [`run_steps`]).
    pub hold_tag: &'a HoldTag,
    /// Prefix of the step ids (the policy's generation), for the agents' logs and tickets.
    pub step_prefix: &'a str,
    pub bandwidth_limit: Option<u64>,
    /// Where the progress of a running send goes.
    pub progress: &'a ProgressReport<'a>,
}

/// Runs `steps` in order.
pub async fn run_steps(
    ctx: &Context,
    epoch: LeaderEpoch,
    ends: &Ends<'_>,
    send: &SendContext<'_>,
    steps: &[Step],
) -> Result<Ran, StepFailed> {
    let mut ran = Ran::default();
    let mut batch: Option<(Side, Vec<BookkeepingAction>)> = None;
    let mut queue: Vec<&Step> = steps.iter().collect();
    queue.reverse();
    while let Some(step) = queue.pop() {
        let Action::Send(s) = &step.action else {
            if let Action::RenameTarget { to, .. } = &step.action {
                ran.rotated_to = Some(to.to_string());
            }
            if let Some((side, action)) = bookkeeping(&step.action) {
                match &mut batch {
                    Some((current, actions)) if *current == side => actions.push(action),
                    _ => {
                        flush(ctx, epoch, ends, send.owner, batch.take(), &ran).await?;
                        batch = Some((side, vec![action]));
                    }
                }
            }
            continue;
        };
        // The snapshot the stream brings is held on the source first. Once received it is
        // the target's newest, and the next incremental needs it as its base: if the
        // source's retention destroyed it before the after-send hold (an agent gone or a
        // controller crash in between), the target would be ahead of the source and no
        // incremental could follow without `receive -F`. The planner releases the hold once
        // a newer common snapshot replaces it.
        if let Some(hold) = in_flight_hold(&s.stream, send.hold_tag) {
            match &mut batch {
                Some((Side::Source, actions)) => actions.push(hold),
                _ => {
                    flush(ctx, epoch, ends, send.owner, batch.take(), &ran).await?;
                    batch = Some((Side::Source, vec![hold]));
                }
            }
        }
        flush(ctx, epoch, ends, send.owner, batch.take(), &ran).await?;
        ran.bytes += transfer(ctx, epoch, ends, send, s, &ran).await?;
        ran.sends += 1;
        // What protects the new common snapshot runs next, before any later step.
        for after in s.on_success.iter().rev() {
            queue.push(after);
        }
    }
    flush(ctx, epoch, ends, send.owner, batch.take(), &ran).await?;
    Ok(ran)
}

/// The hold on the source snapshot a stream brings (none for a resume: the token names it).
fn in_flight_hold(stream: &Stream, tag: &HoldTag) -> Option<BookkeepingAction> {
    let (snapshot, guid) = match stream {
        Stream::Full { snapshot, guid } => (snapshot, *guid),
        Stream::Incremental { to, to_guid, .. } => (to, *to_guid),
        Stream::Resume { .. } => return None,
    };
    Some(BookkeepingAction::Hold {
        snapshot: SnapshotRef {
            snapshot: snapshot.clone(),
            guid,
        },
        tag: tag.clone(),
    })
}

/// The agent action of a non-send step, and where it runs (`None` for a send).
fn bookkeeping(action: &Action) -> Option<(Side, BookkeepingAction)> {
    let at = |snapshot: &tidepool_api::SnapshotName, guid: u64| SnapshotRef {
        snapshot: snapshot.clone(),
        guid,
    };
    Some(match action {
        Action::AbortReceive { target } => (
            Side::Target,
            BookkeepingAction::AbortReceive {
                target: target.clone(),
            },
        ),
        Action::RenameTarget { from, to } => (
            Side::Target,
            BookkeepingAction::RotateAside {
                from: from.clone(),
                to: to.clone(),
            },
        ),
        Action::Hold {
            side,
            snapshot,
            guid,
            tag,
        } => (
            *side,
            BookkeepingAction::Hold {
                snapshot: at(snapshot, *guid),
                tag: tag.clone(),
            },
        ),
        Action::Release {
            side,
            snapshot,
            guid,
            tag,
        } => (
            *side,
            BookkeepingAction::Release {
                snapshot: at(snapshot, *guid),
                tag: tag.clone(),
            },
        ),
        Action::Bookmark {
            snapshot,
            guid,
            bookmark,
        } => (
            Side::Source,
            BookkeepingAction::Bookmark {
                snapshot: at(snapshot, *guid),
                bookmark: bookmark.clone(),
            },
        ),
        Action::DestroyBookmark { bookmark, guid } => (
            Side::Source,
            BookkeepingAction::DestroyBookmark {
                bookmark: bookmark.clone(),
                guid: *guid,
            },
        ),
        Action::SetOwner { snapshots, .. } => (
            Side::Target,
            BookkeepingAction::Claim {
                snapshots: snapshots.clone(),
            },
        ),
        Action::Send(_) => return None,
    })
}

async fn flush(
    ctx: &Context,
    epoch: LeaderEpoch,
    ends: &Ends<'_>,
    owner: &Owner,
    batch: Option<(Side, Vec<BookkeepingAction>)>,
    ran: &Ran,
) -> Result<(), StepFailed> {
    let Some((side, actions)) = batch else {
        return Ok(());
    };
    let node = ends.node(side);
    let request = Request::Bookkeeping(Bookkeeping {
        owner: owner.clone(),
        actions,
    });
    let failed = |e: AgentError| StepFailed {
        node: node.to_owned(),
        reason: e.reason(),
        message: e.chain(),
        resume_failed: None,
        ran: ran.clone(),
    };
    match ends.call(ctx, epoch, side, request).await {
        Ok(Response::Bookkept(_)) => Ok(()),
        Ok(other) => Err(failed(AgentError::unexpected(node, "Bookkeeping", &other))),
        Err(e) => Err(failed(e)),
    }
}

/// The planner's stream as the source agent takes it.
fn wire_stream(stream: &Stream) -> TransferStream {
    match stream {
        Stream::Full { snapshot, .. } => TransferStream::Full {
            snapshot: snapshot.clone(),
        },
        Stream::Incremental {
            base,
            to,
            intermediates,
            ..
        } => TransferStream::Incremental {
            base: match base {
                Base::Snapshot { name, .. } => IncrementalBase::Snapshot { name: name.clone() },
                Base::Bookmark { name, .. } => IncrementalBase::Bookmark { name: name.clone() },
            },
            to: to.clone(),
            intermediates: *intermediates,
        },
        Stream::Resume { token, .. } => TransferStream::Resume {
            token: token.clone(),
        },
    }
}

/// A step id: the policy's prefix, the GUID the stream brings, and the time, so two
/// attempts at one step never share an id.
fn step_id(prefix: &str, stream: &Stream) -> Result<StepId, String> {
    let guid = match stream {
        Stream::Full { guid, .. } => Some(*guid),
        Stream::Incremental { to_guid, .. } => Some(*to_guid),
        Stream::Resume { to_guid, .. } => *to_guid,
    };
    let text = format!(
        "{prefix}-{:x}-{}",
        guid.unwrap_or(0),
        Timestamp::now().as_millisecond()
    );
    text.parse().map_err(|e| format!("step id {text}: {e}"))
}

/// One send: for a target agent, a ticket from it first; then the send from the source
/// (to the agent, or over SSH to a far host).
async fn transfer(
    ctx: &Context,
    epoch: LeaderEpoch,
    ends: &Ends<'_>,
    send: &SendContext<'_>,
    step: &SendStep,
    ran: &Ran,
) -> Result<u64, StepFailed> {
    let resume = match &step.stream {
        Stream::Resume { token, .. } => Some(token.clone()),
        _ => None,
    };
    let failed = |node: &str, reason: &'static str, message: String| StepFailed {
        node: node.to_owned(),
        reason,
        message,
        resume_failed: None,
        ran: ran.clone(),
    };
    let step_id = step_id(send.step_prefix, &step.stream)
        .map_err(|m| failed(&ends.source.node, crate::reasons::AGENT_REFUSED, m))?;
    let binding = TransferBinding {
        owner: send.owner.clone(),
        step: step_id.clone(),
        source_node: ends.source.node.clone(),
    };
    let target = ends.target.node();
    let call = match ends.target {
        TargetEnd::Agent(target_agent) => {
            let prepare = PrepareReceive {
                receive: step.receive.clone(),
                binding: binding.clone(),
                stall_timeout_seconds: None,
            };
            let ticket = match ctx
                .agents
                .transfer(target_agent, epoch, TransferCall::Prepare(prepare))
                .await
            {
                Ok(TransferAnswer::Prepared(PrepareReceiveAnswer::Prepared(p))) => p.ticket,
                Ok(TransferAnswer::Prepared(PrepareReceiveAnswer::Failed(e))) => {
                    let e = AgentError::Failed {
                        node: target.to_owned(),
                        source: e,
                    };
                    return Err(failed(target, e.reason(), e.chain()));
                }
                Ok(
                    TransferAnswer::Sent(_)
                    | TransferAnswer::Listed(_)
                    | TransferAnswer::Store(_)
                    | TransferAnswer::Drilled(_),
                ) => {
                    return Err(failed(
                        target,
                        crate::reasons::AGENT_REFUSED,
                        "the target answered a send to a prepare".into(),
                    ));
                }
                Err(e) => return Err(failed(target, e.reason(), e.chain())),
            };
            TransferCall::Send(Box::new(SendToPeer {
                stream: wire_stream(&step.stream),
                flags: step.flags,
                peer: PeerTarget {
                    endpoint: target_agent.endpoint.clone(),
                    fingerprint: target_agent.pin,
                },
                ticket,
                binding,
                compression: WireCompression::None,
                bandwidth_limit: send.bandwidth_limit,
                stall_timeout_seconds: None,
            }))
        }
        // No ticket: the source agent itself logs in to the far host.
        TargetEnd::Ssh { access, .. } => TransferCall::SendSsh(Box::new(SendToSsh {
            stream: wire_stream(&step.stream),
            flags: step.flags,
            via: (**access).clone(),
            receive: step.receive.clone(),
            binding,
            bandwidth_limit: send.bandwidth_limit,
            stall_timeout_seconds: None,
        })),
        // Uploads are planned and sent by `object_store.rs`, never as a planner step.
        TargetEnd::ObjectStore { .. } => {
            return Err(failed(
                target,
                crate::reasons::TARGET_KIND_UNSUPPORTED,
                "an object store takes uploads, not planner sends".into(),
            ));
        }
    };
    let source = &ends.source.node;
    let sending = ctx.agents.transfer(ends.source, epoch, call);
    let answer = send
        .progress
        .around(ctx, epoch, ends.source, send.owner, &step_id, sending)
        .await;
    match answer {
        Ok(TransferAnswer::Sent(SendToPeerAnswer::Sent(report))) => Ok(report.bytes_sent),
        Ok(TransferAnswer::Sent(SendToPeerAnswer::Failed(e))) => {
            let node = match &e {
                TransferError::Zfs { side, .. } | TransferError::Stalled { side, .. }
                    if side.as_str() == "target" =>
                {
                    target
                }
                _ => source,
            };
            let mut f = failed(node, transfer_reason(&e), e.to_string());
            f.resume_failed = resume.map(|token| ResumeFailure {
                token,
                error: e.to_string(),
            });
            Err(f)
        }
        Ok(
            TransferAnswer::Prepared(_)
            | TransferAnswer::Listed(_)
            | TransferAnswer::Store(_)
            | TransferAnswer::Drilled(_),
        ) => Err(failed(
            source,
            crate::reasons::AGENT_REFUSED,
            "the source answered a prepare to a send".into(),
        )),
        Err(e) => Err(failed(source, e.reason(), e.chain())),
    }
}

/// The status reason of a failed transfer.
pub(crate) fn transfer_reason(e: &TransferError) -> &'static str {
    match e {
        TransferError::PeerUnreachable { .. } => crate::reasons::TARGET_UNREACHABLE,
        TransferError::PeerRefused { .. } | TransferError::InvalidRequest { .. } => {
            crate::reasons::AGENT_REFUSED
        }
        TransferError::Zfs { kind, .. } => crate::reasons::of_zfs_kind(kind),
        TransferError::Stalled { .. } | TransferError::Interrupted { .. } => {
            crate::reasons::TRANSFER_INTERRUPTED
        }
    }
}
