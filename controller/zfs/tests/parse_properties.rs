//! Property tests of the `-H -p` parsers. Names and user property values in a listing can
//! come from another host (a received stream), so the parsers must never panic on any
//! input, and must read back exactly what zfs printed for every legal entry, however odd
//! its name or values.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tidepool_zfs::parse::{
    ListParser, parse_destroy_estimate, parse_get_line, parse_hold_line, parse_pool_line,
    parse_send_estimate, parse_version, read_records_within,
};
use tidepool_zfs::{ObjectType, PoolHealth, PropertyName, PropertySource};

const FIXTURES: &[&str] = &[
    "zfs-list-inventory.txt",
    "zfs-get.txt",
    "zfs-holds.txt",
    "zpool-list.txt",
    "zfs-version.txt",
    "zfs-destroy-nvp.txt",
    "zfs-send-nvP-full.txt",
    "zfs-send-nvP-i.txt",
    "zfs-send-nvP-I.txt",
    "zfs-send-nvP-t.txt",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn props(n: usize) -> Vec<PropertyName> {
    (0..n)
        .map(|i| format!("tidepool.dev:p{i}").parse().unwrap())
        .collect()
}

/// Feeds `input` to every parser, line by line and whole; only a panic fails.
fn parse_everything(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let listers: Vec<ListParser> = (0..4).map(|n| ListParser::new(props(n))).collect();
    for line in text.split('\n') {
        for p in &listers {
            let _ = p.parse_line(line);
        }
        let _ = parse_hold_line(line);
        let _ = parse_get_line(line);
        let _ = parse_pool_line(line);
    }
    let _ = parse_version(&text);
    let _ = parse_destroy_estimate(&text);
    let _ = parse_send_estimate(&text);
    // The streaming reader on the raw bytes (not UTF-8, lines past a small limit).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for max_line in [16, 1 << 20] {
        let mut reader = input;
        let p = &listers[2];
        let _ = rt.block_on(read_records_within(
            &mut reader,
            max_line,
            &mut |l| p.parse_line(l),
            &mut drop,
        ));
    }
}

/// Bytes that steer random input into the parsers' interesting paths.
fn tricky_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'\t'),
        Just(b'\n'),
        Just(b'\r'),
        Just(b'-'),
        Just(b'@'),
        Just(b'#'),
        Just(b'/'),
        Just(b' '),
        Just(b'='),
        b'0'..=b'9',
        any::<u8>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), tricky_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), tricky_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutate(mut v: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = v.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match *m {
            Mutation::Delete(i) if len > 0 => {
                v.remove(at(i));
            }
            Mutation::Insert(i, b) => v.insert(if len == 0 { 0 } else { i % (len + 1) }, b),
            Mutation::Replace(i, b) if len > 0 => v[at(i)] = b,
            Mutation::Truncate(i) => v.truncate(if len == 0 { 0 } else { i % (len + 1) }),
            Mutation::Duplicate(i, n) if len > 0 => {
                let start = at(i);
                let end = (start + n).min(len);
                let piece = v[start..end].to_vec();
                v.splice(start..start, piece);
            }
            _ => {}
        }
    }
    v
}

/// One component of a name OpenZFS accepts: letters, digits, `_ - : . ` and space
/// (zfs_namecheck's valid_char), whatever Tidepool itself would create.
fn component() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_:. -]{1,24}"
}

#[derive(Debug, Clone)]
struct Entry {
    dataset: String,
    short: Option<String>,
    kind: ObjectType,
    guid: u64,
    createtxg: u64,
    creation: i64,
    used: Option<u64>,
    written: Option<u64>,
    token: Option<String>,
    user: Vec<Option<String>>,
}

impl Entry {
    fn name(&self) -> String {
        match (&self.short, self.kind) {
            (Some(s), ObjectType::Snapshot) => format!("{}@{s}", self.dataset),
            (Some(s), ObjectType::Bookmark) => format!("{}#{s}", self.dataset),
            _ => self.dataset.clone(),
        }
    }

    /// The line `zfs list -H -p -o <LIST_COLUMNS>,<user props>` prints for it.
    fn line(&self) -> String {
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let mut cols = vec![
            self.name(),
            self.kind.as_str().to_owned(),
            self.guid.to_string(),
            self.createtxg.to_string(),
            self.creation.to_string(),
            dash(self.used.map(|u| u.to_string())),
            dash(self.written.map(|u| u.to_string())),
            dash(self.token.clone()),
        ];
        cols.extend(self.user.iter().cloned().map(dash));
        cols.join("\t")
    }
}

/// A user property value as another host may have set it: spaces, `\r`, `=`, quotes,
/// non-ASCII; never a newline (zfs -H could not print it), never a tab when several
/// properties share a line (then the line is ambiguous; see `user_props_ambiguous`), and
/// never exactly `-` (which zfs prints for unset).
fn user_value(tabs: bool) -> BoxedStrategy<Option<String>> {
    let value = if tabs {
        "[^\n]{0,40}".boxed()
    } else {
        "[^\t\n]{0,40}".boxed()
    };
    proptest::option::of(value.prop_filter("`-` reads as unset", |v| v != "-")).boxed()
}

fn entry() -> impl Strategy<Value = Entry> {
    let kind = prop_oneof![
        Just(ObjectType::Filesystem),
        Just(ObjectType::Volume),
        Just(ObjectType::Snapshot),
        Just(ObjectType::Bookmark),
    ];
    (
        proptest::collection::vec(component(), 1..5),
        component(),
        kind,
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of("[A-Za-z0-9][A-Za-z0-9-]{0,80}"),
        0usize..4,
    )
        .prop_flat_map(
            |(path, short, kind, guid, createtxg, creation, used, written, token, n)| {
                let values = proptest::collection::vec(user_value(n == 1), n);
                values.prop_map(move |user| Entry {
                    dataset: path.join("/"),
                    short: matches!(kind, ObjectType::Snapshot | ObjectType::Bookmark)
                        .then(|| short.clone()),
                    kind,
                    guid,
                    createtxg,
                    creation,
                    used,
                    written,
                    token: token.clone(),
                    user,
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_parser_panics_on_random_bytes(input in proptest::collection::vec(tricky_byte(), 0..400)) {
        parse_everything(&input);
    }

    #[test]
    fn no_parser_panics_on_random_text(input in "[\\t\\n0-9a-z@#/ :=.-]{0,200}") {
        parse_everything(input.as_bytes());
    }

    #[test]
    fn no_parser_panics_on_mutated_fixtures(
        which in 0..FIXTURES.len(),
        muts in proptest::collection::vec(mutation(), 1..12),
    ) {
        parse_everything(&mutate(fixture(FIXTURES[which]), &muts));
    }

    #[test]
    fn a_listing_line_reads_back_as_printed(e in entry()) {
        let parser = ListParser::new(props(e.user.len()));
        let line = e.line();
        let got = parser.parse_line(&line).unwrap();
        prop_assert_eq!(got.name.as_str(), e.name());
        prop_assert_eq!(got.name.dataset_part(), e.dataset.as_str());
        prop_assert_eq!(got.name.short_part(), e.short.as_deref());
        prop_assert_eq!(got.kind, e.kind);
        prop_assert_eq!((got.guid, got.createtxg, got.creation), (e.guid, e.createtxg, e.creation));
        prop_assert_eq!((got.used, got.written), (e.used, e.written));
        prop_assert_eq!(got.receive_resume_token.as_deref(), e.token.as_deref());
        prop_assert!(!got.user_props_ambiguous());
        for (i, v) in e.user.iter().enumerate() {
            prop_assert_eq!(got.user_prop(i), v.as_deref(), "user property {}", i);
        }
        prop_assert_eq!(got.user_prop(e.user.len()), None);
    }

    #[test]
    fn a_hold_line_reads_back_as_printed(
        path in proptest::collection::vec(component(), 1..4),
        snap in component(),
        tag in "[^\n]{1,40}",
        created in any::<i64>(),
    ) {
        let name = format!("{}@{snap}", path.join("/"));
        let h = parse_hold_line(&format!("{name}\t{tag}\t{created}")).unwrap();
        prop_assert_eq!(h.snapshot.as_str(), name.as_str());
        prop_assert_eq!(h.tag, tag);
        prop_assert_eq!(h.created, created);
    }

    #[test]
    fn a_get_line_reads_back_as_printed(
        path in proptest::collection::vec(component(), 1..4),
        property in "[a-z0-9][a-z0-9:._-]{0,30}",
        value in "[^\n]{0,40}",
        source in 0usize..6,
        from in proptest::collection::vec(component(), 1..3),
    ) {
        let name = path.join("/");
        let from = from.join("/");
        let (printed, expected) = match source {
            0 => ("local".to_owned(), PropertySource::Local),
            1 => ("default".to_owned(), PropertySource::Default),
            2 => ("received".to_owned(), PropertySource::Received),
            3 => ("temporary".to_owned(), PropertySource::Temporary),
            4 => ("-".to_owned(), PropertySource::None),
            _ => (
                format!("inherited from {from}"),
                PropertySource::Inherited(tidepool_zfs::ZfsObjectName::new(from.as_str())),
            ),
        };
        let g = parse_get_line(&format!("{name}\t{property}\t{value}\t{printed}")).unwrap();
        prop_assert_eq!(g.name.as_str(), name.as_str());
        prop_assert_eq!(g.property, property);
        prop_assert_eq!(g.value, value);
        prop_assert_eq!(g.source, expected);
    }

    #[test]
    fn a_pool_line_reads_back_as_printed(
        name in "[A-Za-z][A-Za-z0-9_:. -]{0,30}",
        nums in any::<(u64, u64, u64, u64, u64)>(),
        health in 0usize..7,
        readonly in any::<bool>(),
    ) {
        let healths = [
            PoolHealth::Online,
            PoolHealth::Degraded,
            PoolHealth::Faulted,
            PoolHealth::Offline,
            PoolHealth::Unavail,
            PoolHealth::Removed,
            PoolHealth::Suspended,
        ];
        let h = &healths[health];
        let (guid, size, alloc, free, cap) = nums;
        let line = format!(
            "{name}\t{guid}\t{size}\t{alloc}\t{free}\t{cap}\t{}\t{}",
            h.as_str(),
            if readonly { "on" } else { "off" }
        );
        let p = parse_pool_line(&line).unwrap();
        prop_assert_eq!(p.name.as_str(), name.as_str());
        prop_assert_eq!((p.guid, p.size, p.allocated, p.free, p.capacity_percent), nums);
        prop_assert_eq!(&p.health, h);
        prop_assert_eq!(p.readonly, readonly);
    }
}
