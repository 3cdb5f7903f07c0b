use super::*;
use tidepool_api::HumanDuration;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn interval(i: &str) -> ValidSchedule {
    ValidSchedule {
        cadence: Cadence::Interval(i.parse().expect("duration")),
        time_zone: TimeZone::UTC,
        jitter: None,
    }
}

fn cron(c: &str, tz: &str) -> ValidSchedule {
    ValidSchedule {
        cadence: Cadence::Cron(c.parse().expect("cron")),
        time_zone: TimeZone::get(tz).expect("zone"),
        jitter: None,
    }
}

fn input<'a>(schedule: &'a ValidSchedule, last_run: Option<&str>) -> ScheduleInput<'a> {
    ScheduleInput {
        schedule,
        suspend: false,
        jitter_seed: "uid-1",
        manual_trigger: None,
        last_manual_trigger: None,
        last_run: last_run.map(ts),
        created: ts("2026-01-01T00:00:00Z"),
    }
}

#[test]
fn interval_slots() {
    // (interval, t, next slot after t, latest slot at or before t)
    let cases = [
        (
            "500ms",
            "2026-11-22T09:30:00.2Z",
            "2026-11-22T09:30:00.5Z",
            "2026-11-22T09:30:00Z",
        ),
        (
            "500ms",
            "2026-11-22T09:30:00.5Z",
            "2026-11-22T09:30:01Z",
            "2026-11-22T09:30:00.5Z",
        ),
        (
            "15m",
            "2026-11-22T09:31:00Z",
            "2026-11-22T09:45:00Z",
            "2026-11-22T09:30:00Z",
        ),
        (
            "1d",
            "2026-11-22T09:31:00Z",
            "2026-11-23T00:00:00Z",
            "2026-11-22T00:00:00Z",
        ),
        (
            "1h30m",
            "2026-11-22T01:00:00Z",
            "2026-11-22T01:30:00Z",
            "2026-11-22T00:00:00Z",
        ),
    ];
    for (i, t, next, latest) in cases {
        let slots = Slots::new(&interval(i), "x").expect("valid");
        assert_eq!(slots.next_after(ts(t)).expect("next"), ts(next), "{i} {t}");
        assert_eq!(
            slots.latest_at_or_before(ts(t)).expect("latest"),
            ts(latest),
            "{i} {t}"
        );
    }
}

#[test]
fn evaluate_rules() {
    struct Case {
        name: &'static str,
        last_run: Option<&'static str>,
        now: &'static str,
        want: Option<(RunReason, &'static str, u64, &'static str)>,
        next: &'static str,
    }
    let cases = [
        Case {
            name: "new object waits for its first slot",
            last_run: None,
            now: "2026-01-01T00:10:00Z",
            want: None,
            next: "2026-01-01T00:15:00Z",
        },
        Case {
            name: "a due slot runs and is named by the slot",
            last_run: Some("2026-03-01T10:00:01Z"),
            now: "2026-03-01T10:15:02Z",
            want: Some((
                RunReason::Scheduled,
                "2026-03-01T10:15:00Z",
                0,
                "2026-03-01T10:15:00Z",
            )),
            next: "2026-03-01T10:30:00Z",
        },
        Case {
            name: "nothing due between slots",
            last_run: Some("2026-03-01T10:15:00Z"),
            now: "2026-03-01T10:29:59Z",
            want: None,
            next: "2026-03-01T10:30:00Z",
        },
        Case {
            name: "next due counts from the slot, not from a run that finished late",
            last_run: Some("2026-03-01T10:15:40Z"),
            now: "2026-03-01T10:16:00Z",
            want: None,
            next: "2026-03-01T10:30:00Z",
        },
        Case {
            name: "after downtime one catch-up run for the latest slot, the rest counted",
            last_run: Some("2026-03-01T10:00:00Z"),
            now: "2026-03-01T12:40:00Z",
            want: Some((
                RunReason::CatchUp,
                "2026-03-01T12:30:00Z",
                9,
                "2026-03-01T12:40:00Z",
            )),
            next: "2026-03-01T12:45:00Z",
        },
        Case {
            name: "a run late by over a minute is named by now",
            last_run: Some("2026-03-01T10:00:00Z"),
            now: "2026-03-01T10:17:00Z",
            want: Some((
                RunReason::CatchUp,
                "2026-03-01T10:15:00Z",
                0,
                "2026-03-01T10:17:00Z",
            )),
            next: "2026-03-01T10:30:00Z",
        },
    ];
    let s = interval("15m");
    for c in cases {
        let d = evaluate(&input(&s, c.last_run), ts(c.now)).expect(c.name);
        let got = d
            .run
            .as_ref()
            .map(|r| (r.reason, r.slot.expect("slot"), r.missed, r.name_time));
        let want = c
            .want
            .map(|(reason, slot, missed, name)| (reason, ts(slot), missed, ts(name)));
        assert_eq!(got, want, "{}", c.name);
        assert_eq!(d.next_due, Some(ts(c.next)), "{}", c.name);
    }
}

#[test]
fn slots_before_creation_never_run() {
    let s = interval("1h");
    let mut i = input(&s, None);
    i.created = ts("2026-03-01T10:20:00Z");
    let d = evaluate(&i, ts("2026-03-01T10:59:00Z")).expect("valid");
    assert_eq!(d.run, None);
    let d = evaluate(&i, ts("2026-03-01T11:00:01Z")).expect("valid");
    assert_eq!(d.run.expect("due").reason, RunReason::Scheduled);
}

#[test]
fn suspend_and_manual_trigger() {
    let s = interval("1h");
    let now = ts("2026-03-01T10:30:00Z");
    let base = input(&s, Some("2026-03-01T10:00:00Z"));

    // (suspend, manual, last manual, want reason)
    let cases = [
        (false, None, None, None),
        (false, Some("a"), None, Some(RunReason::Manual)),
        (false, Some("a"), Some("a"), None),
        (false, Some("b"), Some("a"), Some(RunReason::Manual)),
        (true, Some("b"), Some("a"), None),
        (true, None, None, None),
    ];
    for (suspend, manual, last, want) in cases {
        let i = ScheduleInput {
            suspend,
            manual_trigger: manual,
            last_manual_trigger: last,
            ..base
        };
        let d = evaluate(&i, now).expect("valid");
        assert_eq!(
            d.run.as_ref().map(|r| r.reason),
            want,
            "{suspend} {manual:?} {last:?}"
        );
        assert_eq!(d.suspended, suspend);
        assert_eq!(d.next_due.is_none(), suspend);
        if let Some(run) = d.run {
            assert_eq!(run.manual_token.as_deref(), manual);
            assert_eq!(run.name_time, now);
        }
    }

    // A manual trigger while a slot is due: one run answers both.
    let i = ScheduleInput {
        manual_trigger: Some("c"),
        ..base
    };
    let d = evaluate(&i, ts("2026-03-01T11:00:05Z")).expect("valid");
    let run = d.run.expect("run");
    assert_eq!(run.reason, RunReason::ManualAndScheduled);
    assert_eq!(run.slot, Some(ts("2026-03-01T11:00:00Z")));
    assert_eq!(run.manual_token.as_deref(), Some("c"));
    // ... and the schedule goes on as before.
    assert_eq!(d.next_due, Some(ts("2026-03-01T12:00:00Z")));
}

#[test]
fn unsuspending_catches_up_once() {
    let s = interval("1h");
    let i = input(&s, Some("2026-03-01T10:00:00Z"));
    let d = evaluate(&i, ts("2026-03-03T10:30:00Z")).expect("valid");
    let run = d.run.expect("one catch-up");
    assert_eq!(run.reason, RunReason::CatchUp);
    assert_eq!(run.missed, 47);
    // Once it ran, nothing more is due until the next slot.
    let i = input(&s, Some("2026-03-03T10:30:00Z"));
    let d = evaluate(&i, ts("2026-03-03T10:31:00Z")).expect("valid");
    assert_eq!(d.run, None);
}

#[test]
fn sub_second_interval() {
    let s = interval("500ms");
    let mut i = input(&s, Some("2026-03-01T10:00:00.5Z"));
    i.created = ts("2026-03-01T10:00:00Z");
    let d = evaluate(&i, ts("2026-03-01T10:00:01.01Z")).expect("valid");
    let run = d.run.expect("due");
    assert_eq!(run.slot, Some(ts("2026-03-01T10:00:01Z")));
    assert_eq!(run.name_time, ts("2026-03-01T10:00:01Z"));
    assert_eq!(d.next_due, Some(ts("2026-03-01T10:00:01.5Z")));
}

#[test]
fn cron_in_time_zones_and_dst() {
    // (expression, zone, after, next)
    let cases = [
        // Plain: 09:00 Berlin in winter is 08:00 UTC; Friday evening → Monday.
        (
            "0 9 * * 1-5",
            "Europe/Berlin",
            "2026-11-20T12:00:00Z",
            "2026-11-23T08:00:00Z",
        ),
        // Summer time: 09:00 Berlin is 07:00 UTC.
        (
            "0 9 * * *",
            "Europe/Berlin",
            "2026-07-01T12:00:00Z",
            "2026-07-02T07:00:00Z",
        ),
        // Spring forward in New York (8 March 2026, 02:00 → 03:00): 02:30 does not exist
        // and runs at 03:30 EDT; the daily job does not lose its day.
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00Z",
            "2026-03-08T07:30:00Z",
        ),
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-08T07:30:00Z",
            "2026-03-09T06:30:00Z",
        ),
        // Fall back (1 November 2026, 02:00 EDT → 01:00 EST): 01:30 happens twice, a
        // fixed-hour job runs once, at the first (EDT, 05:30 UTC)...
        (
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T00:00:00Z",
            "2026-11-01T05:30:00Z",
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T05:30:00Z",
            "2026-11-02T06:30:00Z",
        ),
        // ... while an every-hour job runs in both hours.
        (
            "30 * * * *",
            "America/New_York",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
        ),
        (
            "30 * * * *",
            "America/New_York",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:30:00Z",
        ),
        // Vixie: day-of-month and day-of-week both restricted → either matches.
        // 13 November 2026 is a Friday; the next match after it is Friday 20th... and
        // 13 December? Friday 20 November comes first.
        (
            "0 0 13 * 5",
            "UTC",
            "2026-11-13T00:00:00Z",
            "2026-11-20T00:00:00Z",
        ),
        (
            "0 0 13 * 5",
            "UTC",
            "2026-12-11T00:00:00Z",
            "2026-12-13T00:00:00Z",
        ),
        // Leap day only: years apart.
        (
            "0 0 29 2 *",
            "UTC",
            "2026-01-01T00:00:00Z",
            "2028-02-29T00:00:00Z",
        ),
        // Lord Howe's 30-minute DST shift (5 April 2026, 02:00 +11 → 01:30 +10:30).
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2026-04-04T12:00:00Z",
            "2026-04-04T14:45:00Z",
        ),
    ];
    for (expr, tz, after, next) in cases {
        let slots = Slots::new(&cron(expr, tz), "x").expect("valid");
        assert_eq!(
            slots.next_after(ts(after)).expect("next"),
            ts(next),
            "{expr} in {tz} after {after}"
        );
        // And backwards: the latest slot at or before `next` is `next`, and just before it
        // is not.
        assert_eq!(
            slots.latest_at_or_before(ts(next)).expect("prev"),
            ts(next),
            "{expr} {tz}"
        );
        assert!(
            slots
                .latest_at_or_before(ts(next) - SignedDuration::from_secs(1))
                .expect("prev")
                <= ts(after),
            "{expr} {tz}"
        );
    }
}

#[test]
fn cron_catch_up_counts_missed() {
    let s = cron("0 * * * *", "Europe/Berlin");
    let i = input(&s, Some("2026-03-01T10:00:00Z"));
    let d = evaluate(&i, ts("2026-03-01T15:30:00Z")).expect("valid");
    let run = d.run.expect("catch-up");
    assert_eq!(run.reason, RunReason::CatchUp);
    assert_eq!(run.slot, Some(ts("2026-03-01T15:00:00Z")));
    assert_eq!(run.missed, 4);
    assert_eq!(d.next_due, Some(ts("2026-03-01T16:00:00Z")));
    // Missed slots are counted up to a cap, not walked for ever.
    let s = cron("* * * * *", "UTC");
    let i = input(&s, Some("2026-01-01T00:00:00Z"));
    let d = evaluate(&i, ts("2026-06-01T00:00:30Z")).expect("valid");
    assert_eq!(d.run.expect("catch-up").missed, MAX_COUNTED_MISSED - 1);
}

#[test]
fn jitter_is_deterministic_and_bounded() {
    let mut s = interval("1h");
    s.jitter = Some("10m".parse::<HumanDuration>().expect("duration"));
    let mut offsets = std::collections::BTreeSet::new();
    for seed in ["a", "b", "c", "d", "e", "f", "0b1c-uid", "another-uid"] {
        let one = Slots::new(&s, seed).expect("valid").jitter_offset();
        let two = Slots::new(&s, seed).expect("valid").jitter_offset();
        assert_eq!(one, two, "same seed, same offset");
        assert!(one >= SignedDuration::ZERO && one < SignedDuration::from_mins(10));
        offsets.insert(one.as_millis());
        let slots = Slots::new(&s, seed).expect("valid");
        let next = slots.next_after(ts("2026-03-01T10:00:00Z")).expect("next");
        let want = if one.is_zero() {
            ts("2026-03-01T11:00:00Z")
        } else {
            ts("2026-03-01T10:00:00Z") + one
        };
        assert_eq!(next, want, "{seed}");
    }
    assert!(offsets.len() >= 6, "seeds spread: {offsets:?}");
    // Cron with jitter: the slot moves by the same offset.
    let mut c = cron("0 3 * * *", "UTC");
    c.jitter = Some("1h".parse::<HumanDuration>().expect("duration"));
    let slots = Slots::new(&c, "uid-7").expect("valid");
    let off = slots.jitter_offset();
    assert_eq!(
        slots.next_after(ts("2026-03-01T00:00:00Z")).expect("next"),
        ts("2026-03-01T03:00:00Z") + off
    );
}

mod properties;
