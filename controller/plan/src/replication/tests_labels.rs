//! The bounded codes that conditions, events and metric labels carry.

use super::*;

#[test]
fn codes_are_their_variant_names() {
    let reasons = [
        ReasonCode::InitialFullSend,
        ReasonCode::FullSendAfterRotate,
        ReasonCode::CarryIntermediates,
        ReasonCode::Incremental,
        ReasonCode::IncrementalFromBookmark,
        ReasonCode::ResumeInterrupted,
        ReasonCode::StaleResumeToken,
        ReasonCode::RotateDiverged,
        ReasonCode::ProtectCommon,
        ReasonCode::ReleaseSuperseded,
        ReasonCode::DestroySupersededBookmark,
        ReasonCode::ClaimReceived,
    ];
    for c in reasons {
        assert_eq!(c.as_str(), format!("{c:?}"));
    }
    let blocked = [
        BlockedCode::SourceMissing,
        BlockedCode::NoSourceSnapshots,
        BlockedCode::PlaintextOfEncryptedSource,
        BlockedCode::Diverged,
        BlockedCode::CannotRotate,
        BlockedCode::InvalidReceiveProperties,
    ];
    for c in blocked {
        assert_eq!(c.as_str(), format!("{c:?}"));
    }
    let reason = Reason {
        code: ReasonCode::Incremental,
        message: "3 is the newest common snapshot".into(),
    };
    assert_eq!(
        reason.to_string(),
        "Incremental: 3 is the newest common snapshot"
    );
}
