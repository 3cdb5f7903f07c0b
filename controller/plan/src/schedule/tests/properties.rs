//! Property tests over random schedules: random cron expressions (every field form), every
//! zone of the bundled tz database, years from 1900 to 2200, random intervals and jitters.

use std::sync::LazyLock;

use super::*;
use crate::naming::{parse_snapshot_time, snapshot_name};
use proptest::prelude::*;
use tidepool_api::CronExpression;

static ZONES: LazyLock<Vec<String>> = LazyLock::new(|| {
    jiff::tz::db()
        .available()
        .map(|name| name.to_string())
        .collect()
});

fn zone() -> impl Strategy<Value = TimeZone> {
    prop::sample::select(ZONES.clone()).prop_map(|name| TimeZone::get(&name).expect("listed"))
}

/// One item of a cron field over `min..=max`, in every form the grammar has.
fn cron_item(min: u32, max: u32) -> impl Strategy<Value = String> {
    let value = min..=max;
    let step = 1u32..=30;
    prop_oneof![
        Just("*".to_owned()),
        step.clone().prop_map(|n| format!("*/{n}")),
        value.clone().prop_map(|a| a.to_string()),
        (value.clone(), value.clone()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (value.clone(), value.clone(), step.clone()).prop_map(|(a, b, n)| format!(
            "{}-{}/{n}",
            a.min(b),
            a.max(b)
        )),
        (value, step).prop_map(|(a, n)| format!("{a}/{n}")),
    ]
}

fn cron_field(min: u32, max: u32) -> impl Strategy<Value = String> {
    prop::collection::vec(cron_item(min, max), 1..=3).prop_map(|items| items.join(","))
}

/// Random expressions that parse: five random fields, or a shorthand.
fn cron_expression() -> impl Strategy<Value = CronExpression> {
    let fields = (
        cron_field(0, 59),
        cron_field(0, 23),
        cron_field(1, 31),
        cron_field(1, 12),
        cron_field(0, 7),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"));
    let shorthand = prop::sample::select(vec![
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ])
    .prop_map(str::to_owned);
    prop_oneof![9 => fields, 1 => shorthand]
        // The few that name only days no chosen month has (31 February) are refused by the
        // parser, as validation refuses them.
        .prop_filter_map("never matches", |text| text.parse().ok())
}

const YEAR_1900: i64 = -2_208_988_800;
const YEAR_2200: i64 = 7_258_118_400;

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (YEAR_1900 * 1000..YEAR_2200 * 1000)
        .prop_map(|ms| Timestamp::from_millisecond(ms).expect("in range"))
}

/// Intervals from the floor to two weeks, whole seconds or not, and a jitter up to it.
fn interval_schedule() -> impl Strategy<Value = ValidSchedule> {
    let whole = (1u64..=1_209_600).prop_map(|s| s * 1000);
    let any = 500u64..=120_000;
    prop_oneof![whole, any]
        .prop_flat_map(|ms| (Just(ms), prop_oneof![Just(0), Just(ms), 0..=ms], zone()))
        .prop_map(|(ms, jitter_ms, time_zone)| ValidSchedule {
            cadence: Cadence::Interval(
                HumanDuration::from_std(std::time::Duration::from_millis(ms)).expect("positive"),
            ),
            time_zone,
            jitter: HumanDuration::from_std(std::time::Duration::from_millis(jitter_ms)),
        })
}

fn cron_schedule() -> impl Strategy<Value = ValidSchedule> {
    (
        cron_expression(),
        zone(),
        prop_oneof![Just(0u64), 1u64..=7_200_000],
    )
        .prop_map(|(cron, time_zone, jitter_ms)| ValidSchedule {
            cadence: Cadence::Cron(cron),
            time_zone,
            jitter: HumanDuration::from_std(std::time::Duration::from_millis(jitter_ms)),
        })
}

fn schedule() -> impl Strategy<Value = ValidSchedule> {
    prop_oneof![interval_schedule(), cron_schedule()]
}

/// Whether `civil` matches the expression's fields (the Vixie day rule included).
fn civil_matches(f: &CronFields, civil: DateTime) -> bool {
    civil.second() == 0
        && civil.subsec_nanosecond() == 0
        && f.minutes & (1 << civil.minute()) != 0
        && f.hours & (1 << civil.hour()) != 0
        && day_matches(f, civil.date())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Forward and backward searches agree, across DST changes, in every zone and over
    /// three centuries: the latest slot at or before `t` and the next one after it are
    /// neighbours with `t` between them; and when they are at most two days apart, no
    /// civil minute between them matches the expression, except the second occurrence of a
    /// folded time (which runs once, unless the hour field is `*`).
    #[test]
    fn cron_slots_are_consistent(cron in cron_expression(), tz in zone(), t in timestamp()) {
        let fields = *cron.fields();
        let schedule = ValidSchedule { cadence: Cadence::Cron(cron), time_zone: tz.clone(), jitter: None };
        let slots = Slots::new(&schedule, "seed").expect("valid");
        let next = slots.next_after(t).expect("next");
        let prev = slots.latest_at_or_before(t).expect("prev");
        prop_assert!(prev <= t && t < next, "{prev} <= {t} < {next}");
        prop_assert_eq!(slots.next_after(prev).expect("next of prev"), next);
        prop_assert_eq!(slots.latest_at_or_before(next).expect("prev of next"), next);
        if next.duration_since(prev) <= SignedDuration::from_hours(48) {
            let every_hour = fields.hours & 0x00ff_ffff == 0x00ff_ffff;
            let mut u = prev + SignedDuration::from_mins(1);
            while u < next {
                let civil = tz.to_datetime(u);
                if civil_matches(&fields, civil) {
                    let second_of_fold = matches!(
                        tz.to_ambiguous_timestamp(civil).offset(),
                        AmbiguousOffset::Fold { after, .. } if after.to_timestamp(civil).ok() == Some(u)
                    );
                    prop_assert!(second_of_fold && !every_hour, "{u} ({civil}) matches between {prev} and {next}");
                }
                u += SignedDuration::from_mins(1);
            }
        }
    }

    /// Intervals: the same, and the spacing is exactly the interval.
    #[test]
    fn interval_slots_are_consistent(
        ms in 1u64..100_000_000,
        t_ms in 0i64..4_000_000_000_000,
        jitter_ms in 0u64..10_000,
    ) {
        let mut s = interval(&format!("{ms}ms"));
        s.jitter = HumanDuration::from_std(std::time::Duration::from_millis(jitter_ms));
        let slots = Slots::new(&s, "seed").expect("valid");
        let t = Timestamp::from_millisecond(t_ms).expect("in range");
        let next = slots.next_after(t).expect("next");
        let prev = slots.latest_at_or_before(t).expect("prev");
        prop_assert!(prev <= t && t < next);
        prop_assert_eq!(next.duration_since(prev).as_millis(), i128::from(ms));
    }

    /// A slot runs once: evaluate, name the snapshot from `Run::name_time`, read the time
    /// back from the name as the controller does (`last_run`), and evaluate again, at once
    /// and at any later moment before the next slot: nothing runs.
    #[test]
    fn a_run_read_back_from_its_name_is_not_run_again(
        schedule in schedule(),
        seed in "[a-f0-9-]{8,36}",
        now in timestamp(),
        created_before_ms in 0i64..30 * 86_400_000,
        last_run_before_ms in prop::option::of(0i64..30 * 86_400_000),
        manual in prop::option::of("[a-z0-9]{1,8}"),
        later_per_mille in 0i64..1000,
    ) {
        let created = now - SignedDuration::from_millis(created_before_ms);
        let last_run = last_run_before_ms.map(|b| now - SignedDuration::from_millis(b));
        let first = ScheduleInput {
            schedule: &schedule,
            suspend: false,
            jitter_seed: &seed,
            manual_trigger: manual.as_deref(),
            last_manual_trigger: None,
            last_run,
            created,
        };
        let decision = evaluate(&first, now).expect("in range");
        let Some(run) = decision.run else { return Ok(()) };
        let precision = name_precision(&schedule);
        let name = snapshot_name("tidepool", "label", run.name_time, precision).expect("valid name");
        let read_back = parse_snapshot_time(name.as_str(), "tidepool");
        prop_assert!(read_back.is_some(), "{} parses", name);
        let again = ScheduleInput {
            last_run: read_back,
            last_manual_trigger: run.manual_token.as_deref(),
            ..first
        };
        let next_due = decision.next_due.expect("not suspended");
        let until_next = i64::try_from(next_due.duration_since(now).as_millis()).expect("small");
        let later = now + SignedDuration::from_millis((until_next - 1).max(0) * later_per_mille / 1000);
        for at in [now, later] {
            let decision = evaluate(&again, at).expect("in range");
            prop_assert_eq!(
                decision.run.as_ref(), None,
                "at {} after {:?} named {} (slot {:?}, jitter offset {})",
                at, run.reason, name, run.slot,
                Slots::new(&schedule, &seed).expect("valid").jitter_offset()
            );
        }
    }
}
