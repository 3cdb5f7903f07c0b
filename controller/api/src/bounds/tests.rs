//! The time pattern admits only what k8s-openapi's `Time` decodes (together with the API
//! server's own check of the day of the month), and everything Tidepool writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use regex::Regex;

use super::*;

fn pattern() -> Regex {
    Regex::new(TIME_PATTERN).unwrap()
}

fn decodes(text: &str) -> bool {
    serde_json::from_value::<Time>(serde_json::Value::String(text.to_owned())).is_ok()
}

/// Whether the date of a matching text exists (what the API server's `date-time` check adds
/// to the pattern).
fn day_exists(text: &str) -> bool {
    let (Ok(y), Ok(m), Ok(d)) = (
        text[0..4].parse::<i16>(),
        text[5..7].parse::<i8>(),
        text[8..10].parse::<i8>(),
    ) else {
        return false;
    };
    jiff::civil::Date::new(y, m, d).is_ok()
}

#[test]
fn refuses_what_the_api_server_admits_and_time_refuses() {
    let re = pattern();
    // Values the API server's date-time check stores and `Time` refuses, and the edges of
    // each part of the pattern.
    for bad in [
        "2026-01-01T00:00:00.1234567890Z",
        "2026-01-01T00:00:00 .5Z",
        "2026-01-01 00:00:00Z",
        "2026-01-01T00:00:00+99:00",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01t00:00:00z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01T00:00:60Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "9999-12-31T00:00:00Z",
        "9999-01-01T00:00:00-01:00",
        "+002026-01-01T00:00:00Z",
        "2026-01-01T00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00,5Z",
        "20260101T000000Z",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00Z\n",
        "",
    ] {
        assert!(!re.is_match(bad), "{bad:?} matches");
    }
    for good in [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.123456789Z",
        "2026-01-01T00:00:00.5+05:30",
        "2026-01-01T00:00:00-23:59",
        "0000-01-01T00:00:00+23:59",
        "9998-12-31T23:59:59-23:59",
    ] {
        assert!(re.is_match(good), "{good:?} does not match");
        assert!(decodes(good), "{good:?} does not decode");
    }
}

fn two(max: u32) -> impl Strategy<Value = String> {
    (0..=max).prop_map(|n| format!("{n:02}"))
}

/// Strings shaped like times, each part drawn past its range, with the variants the API
/// server's check accepts.
fn time_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            (0u32..=9999).prop_map(|y| format!("{y:04}")),
            "[0-9+-]{3,6}"
        ],
        two(13),
        two(32),
        prop_oneof![Just("T"), Just("t"), Just(" ")],
        two(25),
        two(61),
        two(61),
        prop_oneof![Just(String::new()), "[., ][0-9]{0,12}"],
        prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            Just(String::new()),
            ("[+-]", two(99), two(61)).prop_map(|(s, h, m)| format!("{s}{h}:{m}")),
        ],
    )
        .prop_map(|(y, mo, d, t, h, mi, s, f, o)| format!("{y}-{mo}-{d}{t}{h}:{mi}:{s}{f}{o}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn what_the_pattern_admits_decodes(text in prop_oneof![time_like(), any::<String>()]) {
        if pattern().is_match(&text) && day_exists(&text) {
            prop_assert!(decodes(&text), "{text:?} matches but does not decode");
        }
    }

    #[test]
    fn what_tidepool_writes_matches(
        secs in jiff::Timestamp::MIN.as_second()..=jiff::Timestamp::MAX.as_second(),
    ) {
        let ts = jiff::Timestamp::from_second(secs).unwrap();
        let written = serde_json::to_value(Time(ts)).unwrap();
        let text = written.as_str().unwrap();
        // Times Tidepool writes are `now`; the pattern stops short of negative years and of
        // 9999, which jiff cannot always read back.
        if (0..=9998).contains(&ts.to_zoned(jiff::tz::TimeZone::UTC).year()) {
            prop_assert!(pattern().is_match(text), "{text:?} does not match");
        } else {
            prop_assert!(!pattern().is_match(text), "{text:?} matches");
        }
    }
}

/// The lenient readers read exactly what `Time` reads, and nothing fails.
#[test]
fn lenient_readers_agree_with_time_where_it_reads() {
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default, deserialize_with = "lenient_optional_time")]
        optional: Option<Time>,
        #[serde(deserialize_with = "lenient_time")]
        required: Time,
    }
    let fields = |text: &str| -> Fields {
        serde_json::from_value(serde_json::json!({"optional": text, "required": text})).unwrap()
    };
    for text in [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.123456789+05:30",
    ] {
        let time: Time = serde_json::from_value(serde_json::json!(text)).unwrap();
        let read = fields(text);
        assert_eq!(read.optional.as_ref(), Some(&time), "{text}");
        assert_eq!(read.required, time, "{text}");
    }
    for text in [
        "2026-01-01T00:00:00.1234567890Z",
        "2026-01-01T00:00:00+99:00",
        "9999-12-31T23:59:59Z",
        "",
    ] {
        assert!(!decodes(text), "{text}");
        let read = fields(text);
        assert_eq!(read.optional, None, "{text}");
        assert_eq!(read.required, Time(jiff::Timestamp::UNIX_EPOCH), "{text}");
    }
    let absent: Fields = serde_json::from_value(
        serde_json::json!({"optional": null, "required": "2026-01-01T00:00:00Z"}),
    )
    .unwrap();
    assert_eq!(absent.optional, None);
}
