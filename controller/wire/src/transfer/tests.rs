//! JSON forms and refusals of the transfer vocabulary.

use super::*;

fn binding() -> TransferBinding {
    TransferBinding {
        owner: "ReplicationPolicy/default/db".parse().unwrap(),
        step: "g7-123".parse().unwrap(),
        source_node: "node-a".to_owned(),
    }
}

#[test]
fn step_ids_are_header_safe() {
    for ok in ["a", "g12-00ff", "policy.step:3_x", &"x".repeat(128)] {
        assert!(ok.parse::<StepId>().is_ok(), "{ok}");
    }
    for bad in ["", "a b", "a\nb", "é", "a/b", &"x".repeat(129)] {
        assert!(bad.parse::<StepId>().is_err(), "{bad:?}");
        assert!(serde_json::from_str::<StepId>(&format!("{bad:?}")).is_err());
    }
}

#[test]
fn a_ticket_is_64_hex_digits_and_never_debug_printed() {
    let t = TransferTicket::from_bytes([0xab; 32]);
    assert_eq!(t.reveal(), "ab".repeat(32));
    assert_eq!(t.reveal().parse::<TransferTicket>(), Ok(t.clone()));
    assert_eq!(format!("{t:?}"), "TransferTicket(<redacted>)");
    assert!(!format!("{:?}", binding()).contains("abab"));
    for bad in [
        "",
        "AB",
        &"AB".repeat(32),
        &"ab".repeat(31),
        &"ab".repeat(33),
    ] {
        assert!(bad.parse::<TransferTicket>().is_err(), "{bad:?}");
    }
}

#[test]
fn prepare_receive_round_trips_and_refuses_a_forbidden_receive() {
    let op = PrepareReceive {
        receive: ReceiveOptions::new("back/db".parse().unwrap()),
        binding: binding(),
        stall_timeout_seconds: None,
    };
    let json = serde_json::to_value(&op).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "receive": {"target": "back/db", "resumable": true, "set": [], "exclude": []},
            "binding": {"owner": "ReplicationPolicy/default/db", "step": "g7-123", "sourceNode": "node-a"},
        })
    );
    assert_eq!(
        serde_json::from_value::<PrepareReceive>(json.clone()).unwrap(),
        op
    );
    // A receive the allowlist refuses never decodes, so it never reaches an agent's argv.
    let mut bad = json;
    bad["receive"]["set"] = serde_json::json!([{"name": "mountpoint", "value": "/etc"}]);
    assert!(serde_json::from_value::<PrepareReceive>(bad).is_err());
}

#[test]
fn send_to_peer_round_trips_with_its_defaults() {
    let op = SendToPeer {
        stream: TransferStream::Incremental {
            base: IncrementalBase::Bookmark {
                name: "tank/db#b1".parse().unwrap(),
            },
            to: "tank/db@s3".parse().unwrap(),
            intermediates: true,
        },
        flags: SendFlags {
            raw: true,
            ..SendFlags::default()
        },
        peer: PeerTarget {
            endpoint: "10.0.0.2:7443".to_owned(),
            fingerprint: CertificateFingerprint::from_digest([1; 32]),
        },
        ticket: TransferTicket::from_bytes([2; 32]),
        binding: binding(),
        compression: WireCompression::None,
        bandwidth_limit: None,
        stall_timeout_seconds: None,
    };
    let json = serde_json::to_string(&op).unwrap();
    assert_eq!(serde_json::from_str::<SendToPeer>(&json).unwrap(), op);
    assert_eq!(
        op.stream.datasets(),
        vec!["tank/db".parse::<DatasetName>().unwrap(); 2]
    );
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_object_mut().unwrap().remove("compression");
    assert_eq!(serde_json::from_value::<SendToPeer>(v).unwrap(), op);
}

#[test]
fn error_labels_are_the_wire_tags() {
    for e in [
        TransferError::InvalidRequest {
            message: String::new(),
        },
        TransferError::PeerUnreachable {
            message: String::new(),
        },
        TransferError::PeerRefused {
            status: 401,
            reason: String::new(),
            message: String::new(),
        },
        TransferError::Zfs {
            side: TransferSide::Source,
            kind: String::new(),
            message: String::new(),
        },
        TransferError::Stalled {
            side: TransferSide::Target,
            idle_seconds: 1,
        },
        TransferError::Interrupted {
            message: String::new(),
        },
    ] {
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["error"], e.as_str());
    }
}

#[test]
fn outcomes_and_errors_have_stable_tags() {
    let failed = SendToPeerAnswer::Failed(TransferError::Stalled {
        side: TransferSide::Target,
        idle_seconds: 60,
    });
    assert_eq!(
        serde_json::to_value(&failed).unwrap(),
        serde_json::json!({"result": "failed", "error": "stalled", "side": "target", "idleSeconds": 60})
    );
    let received = StreamOutcome::Received {
        bytes_received: 5,
        wire_bytes: 3,
    };
    let json = serde_json::to_string(&received).unwrap();
    assert_eq!(
        serde_json::from_str::<StreamOutcome>(&json).unwrap(),
        received
    );
}
