use super::*;

/// What DESIGN.md names as never settable by a policy, with a value that would be valid
/// for OpenZFS.
const FORBIDDEN_SETS: &[(&str, &str)] = &[
    ("mountpoint", "/etc"),
    ("sharenfs", "on"),
    ("sharesmb", "on"),
    ("setuid", "on"),
    ("exec", "on"),
    ("devices", "on"),
    ("zoned", "off"),
    ("canmount", "on"),
    ("keylocation", "file:///etc/shadow"),
    ("tidepool.dev:owner", "ReplicationPolicy/other/steal"),
    ("tidepool.dev:anything", "x"),
];

const FORBIDDEN_EXCLUDES: &[&str] = &[
    "mountpoint",
    "sharenfs",
    "sharesmb",
    "setuid",
    "exec",
    "devices",
    "zoned",
    "canmount",
    "keylocation",
    "tidepool.dev:owner",
    "tidepool.dev:x",
];

#[test]
fn dangerous_properties_are_refused() {
    for (name, value) in FORBIDDEN_SETS {
        assert!(
            ReceiveProperty::new(name, value).is_err(),
            "set {name}={value}"
        );
    }
    for name in FORBIDDEN_EXCLUDES {
        assert!(ExcludedProperty::new(name).is_err(), "exclude {name}");
    }
    assert!(matches!(
        ReceiveProperty::new("tidepool.dev:owner", "x"),
        Err(ReceivePropertyError::Reserved { .. })
    ));
    assert!(matches!(
        ExcludedProperty::new("canmount"),
        Err(ReceivePropertyError::NotExcludable { .. })
    ));
    assert!(matches!(
        ReceiveProperty::new("canmount", "on"),
        Err(ReceivePropertyError::ValueNotAllowed { .. })
    ));
}

#[test]
fn every_reserved_property_is_under_the_reserved_prefix() {
    for p in RESERVED_PROPERTIES {
        assert!(p.starts_with(RESERVED_PREFIX), "{p}");
        assert!(p.parse::<PropertyName>().is_ok(), "{p}");
    }
}

#[test]
fn harmless_properties_are_allowed() {
    for (name, value) in [
        ("compression", "zstd-3"),
        ("readonly", "on"),
        ("atime", "off"),
        ("recordsize", "1M"),
        ("canmount", "off"),
        ("canmount", "noauto"),
        ("com.example:backup", "nightly run, see wiki"),
    ] {
        let p = ReceiveProperty::new(name, value).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
        assert_eq!(p.to_string(), format!("{name}={value}"));
    }
    for name in ["compression", "readonly", "atime", "com.example:x"] {
        assert!(ExcludedProperty::new(name).is_ok(), "{name}");
    }
    for p in NATIVE {
        for v in p.values {
            assert!(ReceiveProperty::new(p.name, v).is_ok(), "{}={v}", p.name);
        }
    }
}

#[test]
fn values_with_control_characters_or_too_long_are_refused() {
    for v in [
        "a\tb",
        "a\rb",
        "a\nb",
        "a\0b",
        "a\u{1b}[2Jb",
        "a\u{7f}",
        "a\u{85}b",
    ] {
        assert!(
            matches!(
                ReceiveProperty::new("com.example:x", v),
                Err(ReceivePropertyError::InvalidValue { .. })
            ),
            "{v:?}"
        );
    }
    assert!(matches!(
        ReceiveProperty::new("com.example:x", ""),
        Err(ReceivePropertyError::EmptyValue { .. })
    ));
    assert!(ReceiveProperty::new("com.example:x", &"é".repeat(MAX_VALUE_CHARS)).is_ok());
    assert!(matches!(
        ReceiveProperty::new("com.example:x", &"a".repeat(MAX_VALUE_CHARS + 1)),
        Err(ReceivePropertyError::ValueTooLong { .. })
    ));
    // A native property takes only its listed values.
    assert!(ReceiveProperty::new("compression", "lz4;reboot").is_err());
    assert!(ReceiveProperty::new("readonly", "yes").is_err());
}

#[test]
fn names_outside_the_list_or_invalid_are_refused() {
    for name in [
        "",
        "-o",
        "Compression",
        "quota",
        "reservation",
        "dedup",
        "a b",
    ] {
        assert!(ReceiveProperty::new(name, "on").is_err(), "{name:?}");
        assert!(ExcludedProperty::new(name).is_err(), "{name:?}");
    }
}

#[test]
fn serde_goes_through_the_allowlist() {
    let ok: ReceiveProperty = serde_json::from_str(r#"{"name":"readonly","value":"on"}"#).unwrap();
    assert_eq!(ok.to_string(), "readonly=on");
    assert_eq!(
        serde_json::to_string(&ok).unwrap(),
        r#"{"name":"readonly","value":"on"}"#
    );
    let err = serde_json::from_str::<ReceiveProperty>(r#"{"name":"mountpoint","value":"/"}"#)
        .unwrap_err();
    assert!(err.to_string().contains("mountpoint"), "{err}");
    assert!(serde_json::from_str::<ExcludedProperty>(r#""tidepool.dev:owner""#).is_err());
    let x: ExcludedProperty = serde_json::from_str(r#""atime""#).unwrap();
    assert_eq!(x.name().as_str(), "atime");
}

#[test]
fn the_cel_rules_name_every_table_entry() {
    let set = cel::settable_name();
    let exclude = cel::excludable_names();
    for p in NATIVE {
        assert!(set.contains(&format!("'{}'", p.name)), "{}", p.name);
        assert_eq!(
            exclude.contains(&format!("'{}'", p.name)),
            p.excludable,
            "{}",
            p.name
        );
    }
    for (name, _) in FORBIDDEN_SETS {
        if !name.contains(':') && *name != "canmount" {
            assert!(!set.contains(&format!("'{name}'")), "{name}");
        }
    }
    assert_eq!(cel::value_rules().len(), NATIVE.len());
}
