use super::*;
use crate::snapshot_schedule::SnapshotSchedule;

/// A SnapshotSchedule as the API server would return it, with `schedule` replaced.
fn object(schedule: serde_json::Value) -> SnapshotSchedule {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "SnapshotSchedule",
        "metadata": {"name": "s", "namespace": "n"},
        "spec": {"datasets": [{"name": "tank/a"}], "schedule": schedule},
    }))
    .expect("every admitted schedule decodes")
}

fn error(schedule: serde_json::Value) -> SpecError {
    object(schedule).spec.validate().expect_err("invalid")
}

#[test]
fn valid_schedules() {
    let s = object(
        serde_json::json!({"cron": "0 3 * * *", "timeZone": "Europe/Berlin", "jitter": "2h"}),
    );
    let v = s.spec.validate().expect("valid");
    assert!(matches!(&v.schedule.cadence, Cadence::Cron(c) if c.as_str() == "0 3 * * *"));
    assert_eq!(v.schedule.time_zone.iana_name(), Some("Europe/Berlin"));
    assert_eq!(v.schedule.jitter(), Duration::from_secs(7200));
    let s = object(serde_json::json!({"interval": "500ms", "jitter": "500ms"}));
    let v = s.spec.validate().expect("valid");
    assert!(matches!(&v.schedule.cadence, Cadence::Interval(i) if i.as_std() == MIN_INTERVAL));
    assert_eq!(v.schedule.time_zone.iana_name(), Some("UTC"));
}

#[test]
fn invalid_schedules_name_the_field() {
    let cases = [
        (
            serde_json::json!({"cron": "5-1 * * * *"}),
            "spec.schedule.cron",
            "InvalidSchedule",
        ),
        (
            serde_json::json!({"cron": "0 0 31 2 *"}),
            "spec.schedule.cron",
            "InvalidSchedule",
        ),
        (
            serde_json::json!({"cron": "@daily", "timeZone": "Mars/Olympus"}),
            "spec.schedule.timeZone",
            "UnknownTimeZone",
        ),
        (
            serde_json::json!({"interval": "499ms"}),
            "spec.schedule.interval",
            "InvalidSchedule",
        ),
        (
            serde_json::json!({"interval": "1m", "jitter": "1m1ms"}),
            "spec.schedule.jitter",
            "InvalidSchedule",
        ),
        (serde_json::json!({}), "spec.schedule", "InvalidSchedule"),
        (
            serde_json::json!({"interval": "1m", "cron": "@daily"}),
            "spec.schedule",
            "InvalidSchedule",
        ),
    ];
    for (schedule, field, reason) in cases {
        let e = error(schedule.clone());
        assert_eq!(e.field, field, "{schedule}");
        assert_eq!(e.reason(), reason, "{schedule}");
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    let e = error(serde_json::json!({"cron": "5-1 * * * *"}));
    assert!(e.message().contains("does not ascend"), "{}", e.message());
}

#[test]
fn lenient_cron_round_trips_its_text() {
    let s = object(serde_json::json!({"cron": "5-1 * * * *"}));
    let back = serde_json::to_value(&s).expect("serializes");
    assert_eq!(back["spec"]["schedule"]["cron"], "5-1 * * * *");
}

#[test]
fn bandwidth() {
    assert_eq!(parse_bandwidth("50Mi"), Ok(50 << 20));
    assert_eq!(parse_bandwidth("1"), Ok(1));
    assert_eq!(parse_bandwidth("999999999999"), Ok(999_999_999_999));
    assert!(matches!(
        parse_bandwidth("999999999999Gi"),
        Err(SpecProblem::BandwidthTooLarge(_))
    ));
    for bad in ["", "Mi", "0", "01Ki", "1.5Mi", "1Ti", "1 Mi"] {
        assert!(
            matches!(parse_bandwidth(bad), Err(SpecProblem::BandwidthSyntax(_))),
            "{bad:?}"
        );
    }
}
