//! Strict parsers for the `-H -p` output of zfs and zpool. Each parser knows the fixed
//! column list it asked for, checks the column count, treats `-` explicitly and never
//! panics on what zfs prints. They work one line at a time so a listing can be parsed as
//! it streams out of the child (memory bounded by the result, not by the output).

use std::fmt;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::name::ZfsObjectName;
use tidepool_api::values::{PropertyName, ValueError};
use tidepool_api::zfs_node::Capabilities;

/// Why a line (or a whole small output) was refused; the caller adds the argv and line
/// number ([`crate::ZfsError::Parse`]). Values quoted from the input are cut to
/// [`EXCERPT_CHARS`] characters, so an error never carries a megabyte line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    #[error("too few columns: {found} found, {missing} missing")]
    TooFewColumns { found: usize, missing: &'static str },
    #[error("too many columns: expected {expected}, found {found}")]
    TooManyColumns { expected: usize, found: usize },
    #[error("`{record}` line with {found} columns, expected {expected}")]
    WrongColumnCount {
        record: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{0}: empty")]
    Empty(&'static str),
    #[error("{column}: {value:?} is not an unsigned integer")]
    NotAnInteger { column: &'static str, value: String },
    #[error("{column}: {value:?} does not fit in 64 bits")]
    OutOfRange { column: &'static str, value: String },
    #[error("{column}: unknown value {value:?}")]
    UnknownValue { column: &'static str, value: String },
    #[error("{requested} user properties requested, more than a listing can carry")]
    TooManyUserProperties { requested: usize },
    #[error("cannot read a version in {0:?}")]
    Version(String),
    #[error("unexpected line {0:?}")]
    Unexpected(String),
    #[error("no `{0}` line")]
    Missing(&'static str),
    #[error("expected {expected} records, got {found}")]
    RecordCount { expected: usize, found: usize },
    #[error("line longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// How much of an offending input a [`LineError`] quotes.
pub const EXCERPT_CHARS: usize = 80;

fn excerpt(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// The kind of a listed object (`type` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    Filesystem,
    Volume,
    Snapshot,
    Bookmark,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Filesystem => "filesystem",
            ObjectType::Volume => "volume",
            ObjectType::Snapshot => "snapshot",
            ObjectType::Bookmark => "bookmark",
        }
    }

    fn parse(s: &str) -> Result<ObjectType, LineError> {
        Ok(match s {
            "filesystem" => ObjectType::Filesystem,
            "volume" => ObjectType::Volume,
            "snapshot" => ObjectType::Snapshot,
            "bookmark" => ObjectType::Bookmark,
            other => {
                return Err(LineError::UnknownValue {
                    column: "type",
                    value: excerpt(other),
                });
            }
        })
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fixed columns of a listing, in order; requested user properties follow them.
pub const LIST_COLUMNS: &[&str] = &[
    "name",
    "type",
    "guid",
    "createtxg",
    "creation",
    "used",
    "written",
    "receive_resume_token",
];

/// One line of `zfs list -H -p -o <LIST_COLUMNS>,<user props>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub name: ZfsObjectName,
    pub kind: ObjectType,
    pub guid: u64,
    pub createtxg: u64,
    /// Seconds since the Unix epoch.
    pub creation: i64,
    /// Bytes; `None` where zfs prints `-` (bookmarks).
    pub used: Option<u64>,
    /// Bytes written since the previous snapshot; `None` where zfs prints `-`.
    pub written: Option<u64>,
    /// Set on a filesystem or volume that holds a partially received stream.
    pub receive_resume_token: Option<Box<str>>,
    /// The requested user properties' columns as printed (tab-separated, `-` for unset),
    /// kept as one string: one allocation per entry however many are requested. Read them
    /// with [`ListEntry::user_prop`].
    user_props: Option<Box<str>>,
    user_prop_count: u16,
}

impl ListEntry {
    /// The value of the `i`th requested user property; `None` when unset (`-`), and for
    /// every property of an entry whose user properties are
    /// [ambiguous](ListEntry::user_props_ambiguous).
    pub fn user_prop(&self, i: usize) -> Option<&str> {
        let n = usize::from(self.user_prop_count);
        if i >= n || self.user_props_ambiguous() {
            return None;
        }
        let raw = self.user_props.as_deref()?;
        // With one column, it takes the rest of the line (its value may contain tabs).
        let v = raw.splitn(n, '\t').nth(i)?;
        if v == "-" { None } else { Some(v) }
    }

    /// Whether a user property value contains a tab, so that with several requested user
    /// properties zfs's `-H` output cannot say which tab separates columns. Tidepool never
    /// writes such a value ([`crate::PropertyValue`] refuses tabs), so this means a foreign
    /// value; the entry's user properties then read as unset, which callers treat as
    /// "not Tidepool's" (the safe side: never destroyed, never claimed).
    pub fn user_props_ambiguous(&self) -> bool {
        let n = usize::from(self.user_prop_count);
        n > 1
            && self
                .user_props
                .as_deref()
                .is_some_and(|raw| raw.bytes().filter(|&b| b == b'\t').count() >= n)
    }
}

/// Parses listing lines for one fixed set of requested user properties.
#[derive(Debug, Clone)]
pub struct ListParser {
    user_props: Vec<PropertyName>,
}

impl ListParser {
    pub fn new(user_props: Vec<PropertyName>) -> ListParser {
        ListParser { user_props }
    }

    pub fn user_props(&self) -> &[PropertyName] {
        &self.user_props
    }

    /// The `-o` argument this parser expects.
    pub fn columns_arg(&self) -> String {
        let mut s = LIST_COLUMNS.join(",");
        for p in &self.user_props {
            s.push(',');
            s.push_str(p.as_str());
        }
        s
    }

    pub fn column_count(&self) -> usize {
        LIST_COLUMNS.len() + self.user_props.len()
    }

    /// Parses one line (without its newline).
    pub fn parse_line(&self, line: &str) -> Result<ListEntry, LineError> {
        // No `\r` is stripped: zfs never prints one, and the last column may be a foreign
        // user property value that ends in one.
        let mut f = Fields::new(line);
        let name = f.next("name")?;
        if name.is_empty() {
            return Err(LineError::Empty("name"));
        }
        let kind = ObjectType::parse(f.next("type")?)?;
        let guid = parse_u64(f.next("guid")?, "guid")?;
        let createtxg = parse_u64(f.next("createtxg")?, "createtxg")?;
        let creation = parse_i64(f.next("creation")?, "creation")?;
        let used = opt_u64(f.next("used")?, "used")?;
        let written = opt_u64(f.next("written")?, "written")?;
        let token = opt_str(f.next("receive_resume_token")?);
        let n = self.user_props.len();
        let user_props = if n == 0 {
            f.end(LIST_COLUMNS.len())?;
            None
        } else {
            // Check that every requested column is there. More tabs than columns means a
            // value (set by someone else) contains a tab: kept, and reported by
            // `user_props_ambiguous` (unambiguous when only one property was requested).
            let tail = f.rest("user property")?;
            let found = tail.bytes().filter(|&b| b == b'\t').count() + 1;
            if found < n {
                return Err(LineError::TooFewColumns {
                    found: LIST_COLUMNS.len() + found,
                    missing: "user property",
                });
            }
            if n == 1 && tail == "-" {
                None
            } else {
                Some(Box::from(tail))
            }
        };
        Ok(ListEntry {
            name: ZfsObjectName::new(name),
            kind,
            guid,
            createtxg,
            creation,
            used,
            written,
            receive_resume_token: token.map(Into::into),
            user_props,
            user_prop_count: u16::try_from(n)
                .map_err(|_| LineError::TooManyUserProperties { requested: n })?,
        })
    }
}

/// A whole listing: the entries in the order zfs printed them and the user properties
/// they carry values for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub user_props: Vec<PropertyName>,
    pub entries: Vec<ListEntry>,
}

impl Inventory {
    /// The value of a requested user property on an entry.
    pub fn user_prop<'a>(&self, entry: &'a ListEntry, prop: &str) -> Option<&'a str> {
        let i = self.user_props.iter().position(|p| p.as_str() == prop)?;
        entry.user_prop(i)
    }

    pub fn get(&self, name: &str) -> Option<&ListEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Snapshots of one dataset, oldest first (by createtxg).
    pub fn snapshots_of(&self, dataset: &str) -> Vec<&ListEntry> {
        let mut v: Vec<&ListEntry> = self
            .entries
            .iter()
            .filter(|e| e.kind == ObjectType::Snapshot && e.name.dataset_part() == dataset)
            .collect();
        v.sort_by_key(|e| e.createtxg);
        v
    }

    /// Bookmarks of one dataset, oldest first (by createtxg).
    pub fn bookmarks_of(&self, dataset: &str) -> Vec<&ListEntry> {
        let mut v: Vec<&ListEntry> = self
            .entries
            .iter()
            .filter(|e| e.kind == ObjectType::Bookmark && e.name.dataset_part() == dataset)
            .collect();
        v.sort_by_key(|e| e.createtxg);
        v
    }

    /// Filesystems and volumes.
    pub fn datasets(&self) -> impl Iterator<Item = &ListEntry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, ObjectType::Filesystem | ObjectType::Volume))
    }
}

/// Tab-separated fields of one line, checked against the expected count.
struct Fields<'a> {
    rest: Option<&'a str>,
    taken: usize,
}

impl<'a> Fields<'a> {
    fn new(line: &'a str) -> Fields<'a> {
        Fields {
            rest: Some(line),
            taken: 0,
        }
    }

    fn next(&mut self, what: &'static str) -> Result<&'a str, LineError> {
        let rest = self.rest.ok_or(LineError::TooFewColumns {
            found: self.taken,
            missing: what,
        })?;
        self.taken += 1;
        // A plain byte loop: fields are short, and `str::find(char)` (memchr set-up per
        // call) was the largest cost in the parse benchmark.
        match rest.bytes().position(|b| b == b'\t') {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Ok(&rest[..i])
            }
            None => {
                self.rest = None;
                Ok(rest)
            }
        }
    }

    fn rest(&mut self, what: &'static str) -> Result<&'a str, LineError> {
        let rest = self.rest.take().ok_or(LineError::TooFewColumns {
            found: self.taken,
            missing: what,
        })?;
        self.taken += 1;
        Ok(rest)
    }

    fn end(&self, expected: usize) -> Result<(), LineError> {
        match self.rest {
            None => Ok(()),
            Some(r) => Err(LineError::TooManyColumns {
                expected,
                found: expected + 1 + r.matches('\t').count(),
            }),
        }
    }
}

pub(crate) fn parse_u64(s: &str, what: &'static str) -> Result<u64, LineError> {
    let not_integer = || LineError::NotAnInteger {
        column: what,
        value: excerpt(s),
    };
    // Digits only (`str::parse` would accept a leading '+', which zfs never prints). One
    // loop with checked arithmetic; the unchecked fast path for short numbers it replaced
    // was within run-to-run noise in `cargo bench -p tidepool-zfs` (streaming 0.35 s vs
    // 0.38-0.39 s cpu per 1M lines, baseline varying 1.02-1.17 s), 2.6x over the target.
    if s.is_empty() {
        return Err(LineError::Empty(what));
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(not_integer());
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or_else(|| LineError::OutOfRange {
                column: what,
                value: excerpt(s),
            })?;
    }
    Ok(v)
}

fn parse_i64(s: &str, what: &'static str) -> Result<i64, LineError> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let magnitude = parse_u64(digits, what)?;
    let v = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    v.ok_or_else(|| LineError::OutOfRange {
        column: what,
        value: excerpt(s),
    })
}

fn opt_u64(s: &str, what: &'static str) -> Result<Option<u64>, LineError> {
    if s == "-" {
        Ok(None)
    } else {
        parse_u64(s, what).map(Some)
    }
}

fn opt_str(s: &str) -> Option<&str> {
    if s == "-" { None } else { Some(s) }
}

/// One line of `zfs holds -H -p`: `name<TAB>tag<TAB>timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub snapshot: ZfsObjectName,
    pub tag: String,
    /// Seconds since the Unix epoch.
    pub created: i64,
}

pub fn parse_hold_line(line: &str) -> Result<Hold, LineError> {
    // Names have no tab; the timestamp is last; a tag set by someone else may contain
    // anything, so it is whatever lies between.
    let (name, rest) = line.split_once('\t').ok_or(LineError::TooFewColumns {
        found: 1,
        missing: "tag",
    })?;
    let (tag, ts) = rest.rsplit_once('\t').ok_or(LineError::TooFewColumns {
        found: 2,
        missing: "timestamp",
    })?;
    if name.is_empty() {
        return Err(LineError::Empty("name"));
    }
    Ok(Hold {
        snapshot: ZfsObjectName::new(name),
        tag: tag.to_owned(),
        created: parse_i64(ts, "timestamp")?,
    })
}

/// Where a property's value comes from (`source` column of `zfs get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertySource {
    Local,
    Default,
    Received,
    Temporary,
    /// `inherited from <dataset>`.
    Inherited(ZfsObjectName),
    /// `-`: read-only or not applicable.
    None,
    Other(String),
}

impl PropertySource {
    fn parse(s: &str) -> PropertySource {
        match s {
            "local" => PropertySource::Local,
            "default" => PropertySource::Default,
            "received" => PropertySource::Received,
            "temporary" => PropertySource::Temporary,
            "-" | "none" => PropertySource::None,
            _ => match s.strip_prefix("inherited from ") {
                Some(from) => PropertySource::Inherited(ZfsObjectName::new(from)),
                None => PropertySource::Other(s.to_owned()),
            },
        }
    }
}

/// One line of `zfs get -H -p -o name,property,value,source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyEntry {
    pub name: ZfsObjectName,
    pub property: String,
    /// As printed; `-` means unset or not applicable (see [`PropertyEntry::value_opt`]).
    pub value: String,
    pub source: PropertySource,
}

impl PropertyEntry {
    /// The value, with `-` read as unset.
    pub fn value_opt(&self) -> Option<&str> {
        if self.value == "-" {
            None
        } else {
            Some(&self.value)
        }
    }
}

pub fn parse_get_line(line: &str) -> Result<PropertyEntry, LineError> {
    let missing = |found, missing| LineError::TooFewColumns { found, missing };
    let (name, rest) = line.split_once('\t').ok_or(missing(1, "property"))?;
    let (property, rest) = rest.split_once('\t').ok_or(missing(2, "value"))?;
    // The value may contain tabs (a user property set by someone else); the source never
    // does, so it is the last column.
    let (value, source) = rest.rsplit_once('\t').ok_or(missing(3, "source"))?;
    if name.is_empty() {
        return Err(LineError::Empty("name"));
    }
    if property.is_empty() {
        return Err(LineError::Empty("property"));
    }
    Ok(PropertyEntry {
        name: ZfsObjectName::new(name),
        property: property.to_owned(),
        value: value.to_owned(),
        source: PropertySource::parse(source),
    })
}

/// Pool health is a wire type (the agent reports it); the listing parser reads it.
pub use tidepool_wire::PoolHealth;

/// Columns of `zpool list -H -p -o ...`.
pub const POOL_COLUMNS: &str = "name,guid,size,allocated,free,capacity,health,readonly";

/// One line of `zpool list -H -p -o <POOL_COLUMNS>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub name: ZfsObjectName,
    pub guid: u64,
    pub size: u64,
    pub allocated: u64,
    pub free: u64,
    /// Percent of `size` allocated.
    pub capacity_percent: u64,
    pub health: PoolHealth,
    pub readonly: bool,
}

pub fn parse_pool_line(line: &str) -> Result<PoolEntry, LineError> {
    let mut f = Fields::new(line);
    let name = f.next("name")?;
    if name.is_empty() {
        return Err(LineError::Empty("name"));
    }
    let guid = parse_u64(f.next("guid")?, "guid")?;
    let size = parse_u64(f.next("size")?, "size")?;
    let allocated = parse_u64(f.next("allocated")?, "allocated")?;
    let free = parse_u64(f.next("free")?, "free")?;
    let cap = f.next("capacity")?;
    let capacity_percent = parse_u64(cap.strip_suffix('%').unwrap_or(cap), "capacity")?;
    let health = PoolHealth::from_zpool(f.next("health")?);
    let readonly = match f.next("readonly")? {
        "on" => true,
        "off" | "-" => false,
        other => {
            return Err(LineError::UnknownValue {
                column: "readonly",
                value: excerpt(other),
            });
        }
    };
    f.end(8)?;
    Ok(PoolEntry {
        name: ZfsObjectName::new(name),
        guid,
        size,
        allocated,
        free,
        capacity_percent,
        health,
        readonly,
    })
}

/// An OpenZFS release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses the leading `X.Y[.Z]` of `2.3.2-1~bpo12+1`.
    fn parse_prefix(s: &str) -> Option<Version> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let mut parts = s[..end].split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Version::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What `zfs version` reports: the userland tools and the loaded kernel module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsVersion {
    pub userland: Version,
    /// `None` when the module is not loaded (zfs prints no `zfs-kmod-` line).
    pub kernel: Option<Version>,
    /// The full strings as printed, e.g. `zfs-2.3.2-1~bpo12+1`.
    pub userland_raw: String,
    pub kernel_raw: Option<String>,
}

impl ZfsVersion {
    /// The version that bounds what works: the older of userland and kernel module.
    pub fn effective(&self) -> Version {
        match self.kernel {
            Some(k) => k.min(self.userland),
            None => self.userland,
        }
    }

    /// What this release can do (the api type the `ZfsNode` status publishes). What a pool
    /// can do is read from its features: [`crate::Zfs::pool_capabilities`].
    pub fn capabilities(&self) -> Capabilities {
        let v = self.effective();
        Capabilities {
            bookmarks: v >= Version::new(0, 6, 4),
            resumable_receive: v >= Version::new(0, 7, 0),
            raw_send: v >= Version::new(0, 8, 0),
            bookmark_copy: v >= Version::new(2, 0, 0),
            json_output: v >= Version::new(2, 3, 0),
        }
    }
}

/// Parses the output of `zfs version`.
pub fn parse_version(out: &str) -> Result<ZfsVersion, LineError> {
    let mut userland = None;
    let mut kernel = None;
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("zfs-kmod-") {
            let ver = Version::parse_prefix(v).ok_or_else(|| LineError::Version(excerpt(line)))?;
            kernel = Some((ver, line.to_owned()));
        } else if let Some(v) = line.strip_prefix("zfs-") {
            let ver = Version::parse_prefix(v).ok_or_else(|| LineError::Version(excerpt(line)))?;
            userland = Some((ver, line.to_owned()));
        }
    }
    let (userland, userland_raw) = userland.ok_or(LineError::Missing("zfs-<version>"))?;
    Ok(ZfsVersion {
        userland,
        userland_raw,
        kernel: kernel.as_ref().map(|k| k.0),
        kernel_raw: kernel.map(|k| k.1),
    })
}

/// The parsed output of `zfs destroy -n -v -p`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestroyEstimate {
    /// What would be destroyed, as printed.
    pub destroyed: Vec<ZfsObjectName>,
    /// Bytes the destroy would free (`reclaim`).
    pub reclaim_bytes: u64,
}

/// Parses `zfs destroy -n -v -p` output: `destroy<TAB>name` lines and one
/// `reclaim<TAB>bytes` line.
pub fn parse_destroy_estimate(out: &str) -> Result<DestroyEstimate, LineError> {
    let mut est = DestroyEstimate::default();
    let mut reclaim = None;
    for line in out.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(name) = line.strip_prefix("destroy\t") {
            est.destroyed.push(ZfsObjectName::new(name));
        } else if let Some(n) = line.strip_prefix("reclaim\t") {
            reclaim = Some(parse_u64(n, "reclaim")?);
        } else if !line.trim().is_empty() {
            return Err(LineError::Unexpected(excerpt(line)));
        }
    }
    est.reclaim_bytes = reclaim.ok_or(LineError::Missing("reclaim"))?;
    Ok(est)
}

/// One stream of a dry-run send (`zfs send -n -v -P`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendEstimateItem {
    /// `None` for a full stream; the incremental source as printed otherwise.
    pub from: Option<String>,
    pub to: String,
    pub bytes: u64,
}

/// The parsed output of `zfs send -n -v -P`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendEstimate {
    pub items: Vec<SendEstimateItem>,
    /// The `size` line: the estimated stream size in bytes (for `-t`, what is left).
    pub total_bytes: u64,
    /// With `-t`: what the resume token holds (`resume token contents:`).
    pub resume: Option<ResumeTokenContents>,
}

/// The decoded fields of a resume token, as `zfs send -nvP -t` prints them. Enough to
/// check a token before using it: does the snapshot `toname` still exist with `toguid`,
/// is the stream incremental (`fromguid`), raw, compressed...
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResumeTokenContents {
    pub toname: Option<String>,
    pub toguid: Option<u64>,
    pub fromguid: Option<u64>,
    /// Bytes already received.
    pub bytes: Option<u64>,
    pub object: Option<u64>,
    pub offset: Option<u64>,
    pub raw: bool,
    pub compressed: bool,
    pub large_blocks: bool,
    pub embed: bool,
    /// Every `name = value` pair as printed, the above included.
    pub fields: Vec<(String, String)>,
}

impl ResumeTokenContents {
    fn set(&mut self, key: &str, value: &str) {
        let num = || {
            let v = value.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        };
        match key {
            "toname" => self.toname = Some(value.to_owned()),
            "toguid" => self.toguid = num(),
            "fromguid" => self.fromguid = num(),
            "bytes" => self.bytes = num(),
            "object" => self.object = num(),
            "offset" => self.offset = num(),
            "rawok" => self.raw = true,
            "compressok" => self.compressed = true,
            "largeblockok" => self.large_blocks = true,
            "embedok" => self.embed = true,
            _ => {}
        }
        self.fields.push((key.to_owned(), value.to_owned()));
    }
}

/// Parses `zfs send -nvP` output. Lines other than `full`, `incremental` and `size` (the
/// resume-token dump `zfs send -t` prints first, for example) are skipped.
pub fn parse_send_estimate(out: &str) -> Result<SendEstimate, LineError> {
    let mut est = SendEstimate::default();
    let mut total = None;
    let mut in_token = false;
    for line in out.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with("resume token contents") {
            in_token = true;
            est.resume = Some(ResumeTokenContents::default());
            continue;
        }
        if in_token {
            // `\tname = value` lines (and a `nvlist version: 0` header) until the first
            // stream line.
            if let Some((k, v)) = line.trim_start().split_once(" = ") {
                if let Some(r) = est.resume.as_mut() {
                    r.set(k.trim(), v);
                }
                continue;
            }
            if line.starts_with("nvlist version") {
                continue;
            }
            in_token = false;
        }
        let mut cols = line.split('\t');
        match cols.next() {
            Some("full") => {
                let cols: Vec<&str> = cols.collect();
                let [to, size] = cols[..] else {
                    return Err(LineError::WrongColumnCount {
                        record: "full",
                        expected: 3,
                        found: cols.len() + 1,
                    });
                };
                est.items.push(SendEstimateItem {
                    from: None,
                    to: to.to_owned(),
                    bytes: parse_u64(size, "size")?,
                });
            }
            Some("incremental") => {
                let cols: Vec<&str> = cols.collect();
                let [from, to, size] = cols[..] else {
                    return Err(LineError::WrongColumnCount {
                        record: "incremental",
                        expected: 4,
                        found: cols.len() + 1,
                    });
                };
                est.items.push(SendEstimateItem {
                    from: Some(from.to_owned()),
                    to: to.to_owned(),
                    bytes: parse_u64(size, "size")?,
                });
            }
            Some("size") => {
                let size = cols.next().ok_or(LineError::TooFewColumns {
                    found: 1,
                    missing: "size",
                })?;
                total = Some(parse_u64(size, "size")?);
            }
            _ => {}
        }
    }
    est.total_bytes = match total {
        Some(t) => t,
        None if !est.items.is_empty() => est.items.iter().map(|i| i.bytes).sum(),
        None => return Err(LineError::Missing("size")),
    };
    Ok(est)
}

/// The longest line a record reader accepts. A listing line is a name (at most 255
/// bytes), a few numbers, a resume token (a few KiB) and the requested user properties
/// (8 KiB each at most); anything longer is not zfs output, and buffering it would let one
/// line take unbounded memory.
pub const LINE_CAP: usize = 1 << 20;

/// Why reading a line-per-record output failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read failed: {0}")]
    Io(#[source] std::io::Error),
    /// Line numbers are 1-based.
    #[error("line {line}: {reason}")]
    Line {
        line: usize,
        #[source]
        reason: LineError,
    },
}

/// Reads `\n`-terminated records as they arrive (from a child's stdout, a file, a socket),
/// reusing one line buffer, and hands each parsed record to `each`: memory stays bounded
/// by what `each` keeps and [`LINE_CAP`]. Returns the number of records.
pub async fn read_records<R, T>(
    reader: &mut R,
    parse: &mut impl FnMut(&str) -> Result<T, LineError>,
    each: &mut impl FnMut(T),
) -> Result<usize, ReadError>
where
    R: AsyncBufRead + Unpin + ?Sized,
{
    read_records_within(reader, LINE_CAP, parse, each).await
}

/// [`read_records`] with a line limit of `max_line` bytes (the newline not counted).
pub async fn read_records_within<R, T>(
    reader: &mut R,
    max_line: usize,
    parse: &mut impl FnMut(&str) -> Result<T, LineError>,
    each: &mut impl FnMut(T),
) -> Result<usize, ReadError>
where
    R: AsyncBufRead + Unpin + ?Sized,
{
    let mut buf = Vec::with_capacity(512);
    let mut line_no = 0usize;
    let mut records = 0usize;
    loop {
        buf.clear();
        let ended = read_line_within(reader, max_line, &mut buf)
            .await
            .map_err(ReadError::Io)?;
        let Some(complete) = ended else {
            return Err(ReadError::Line {
                line: line_no + 1,
                reason: LineError::TooLong { limit: max_line },
            });
        };
        if !complete && buf.is_empty() {
            return Ok(records);
        }
        line_no += 1;
        if buf.is_empty() {
            continue;
        }
        // Names are ASCII; a foreign user property value may not be UTF-8. Lossy keeps the
        // listing usable; the fast validator runs first (the lossy one is much slower).
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => std::borrow::Cow::Borrowed(l),
            Err(_) => String::from_utf8_lossy(&buf),
        };
        let record = parse(&line).map_err(|reason| ReadError::Line {
            line: line_no,
            reason,
        })?;
        each(record);
        records += 1;
    }
}

/// Appends one line (without its `\n`) to `buf`. `Some(true)`: a newline ended it;
/// `Some(false)`: the input ended (an empty `buf` then means nothing was left); `None`:
/// the line passed `max_line` bytes and reading stopped.
async fn read_line_within<R>(
    reader: &mut R,
    max_line: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>>
where
    R: AsyncBufRead + Unpin + ?Sized,
{
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Some(false));
        }
        let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if buf.len() + chunk.len() > max_line {
            return Ok(None);
        }
        buf.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(newline);
        reader.consume(used);
        if newline {
            return Ok(Some(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(props: &[&str]) -> ListParser {
        ListParser::new(props.iter().map(|p| p.parse().unwrap()).collect())
    }

    #[test]
    fn list_line_with_dashes_and_user_props() {
        let p = parser(&["tidepool.dev:owner"]);
        let e = p
            .parse_line("tank/a@s1\tsnapshot\t123\t45\t1763800000\t0\t12288\t-\tns/x")
            .unwrap();
        assert_eq!(e.name, "tank/a@s1");
        assert_eq!(e.kind, ObjectType::Snapshot);
        assert_eq!((e.guid, e.createtxg, e.creation), (123, 45, 1763800000));
        assert_eq!((e.used, e.written), (Some(0), Some(12288)));
        assert_eq!(e.receive_resume_token, None);
        assert_eq!(e.user_prop(0), Some("ns/x"));
        assert_eq!(e.user_prop(1), None);
        let b = p
            .parse_line("tank/a#m\tbookmark\t9\t45\t1763800000\t-\t-\t-\t-")
            .unwrap();
        assert_eq!((b.used, b.written, b.user_prop(0)), (None, None, None));
    }

    #[test]
    fn list_line_column_checks() {
        let p = parser(&[]);
        let ok = "tank\tfilesystem\t1\t1\t1\t1\t1\t-";
        assert!(p.parse_line(ok).is_ok());
        assert_eq!(
            p.parse_line(&format!("{ok}\textra")).unwrap_err(),
            LineError::TooManyColumns {
                expected: 8,
                found: 9
            }
        );
        assert_eq!(
            p.parse_line("tank\tfilesystem\t1").unwrap_err(),
            LineError::TooFewColumns {
                found: 3,
                missing: "createtxg"
            }
        );
        assert!(p.parse_line("tank\tpony\t1\t1\t1\t1\t1\t-").is_err());
        assert!(p.parse_line("tank\tfilesystem\t+1\t1\t1\t1\t1\t-").is_err());
        assert!(
            p.parse_line("tank\tfilesystem\t18446744073709551616\t1\t1\t1\t1\t-")
                .is_err()
        );
        assert!(p.parse_line("\tfilesystem\t1\t1\t1\t1\t1\t-").is_err());
        assert!(p.parse_line("").is_err());
    }

    #[test]
    fn a_tab_in_a_user_prop_value() {
        let p = parser(&["a:b", "c:d"]);
        let e = p
            .parse_line("t/x\tfilesystem\t1\t1\t1\t1\t1\t-\tv1\tv\t2")
            .unwrap();
        assert!(e.user_props_ambiguous());
        assert_eq!((e.user_prop(0), e.user_prop(1)), (None, None));
        let one = parser(&["a:b"])
            .parse_line("t/x\tfilesystem\t1\t1\t1\t1\t1\t-\tv\t2")
            .unwrap();
        assert!(!one.user_props_ambiguous());
        assert_eq!(one.user_prop(0), Some("v\t2"));
        assert!(
            p.parse_line("t/x\tfilesystem\t1\t1\t1\t1\t1\t-\tv1")
                .is_err()
        );
    }

    #[test]
    fn holds_get_pool_lines() {
        let h = parse_hold_line("my pool/a b@s 1\ttag with\ttab\t1763800000").unwrap();
        assert_eq!(h.snapshot, "my pool/a b@s 1");
        assert_eq!(h.tag, "tag with\ttab");
        assert!(parse_hold_line("x@y\ttag").is_err());
        let g = parse_get_line("tank/a\tcompression\tlz4\tinherited from tank").unwrap();
        assert_eq!(
            g.source,
            PropertySource::Inherited(ZfsObjectName::new("tank"))
        );
        let g = parse_get_line("tank/a\tx:y\t-\t-").unwrap();
        assert_eq!((g.value_opt(), &g.source), (None, &PropertySource::None));
        let pl = parse_pool_line("tank\t42\t1000\t10\t990\t1\tONLINE\toff").unwrap();
        assert_eq!(
            (pl.capacity_percent, pl.health, pl.readonly),
            (1, PoolHealth::Online, false)
        );
    }

    #[test]
    fn versions_and_capabilities() {
        let v = parse_version("zfs-2.3.2-1~bpo12+1\nzfs-kmod-2.3.2-1~bpo12+1\n").unwrap();
        assert_eq!(v.userland, Version::new(2, 3, 2));
        assert_eq!(v.kernel, Some(Version::new(2, 3, 2)));
        let c = v.capabilities();
        assert!(c.bookmarks && c.raw_send && c.resumable_receive && c.json_output);
        let old = parse_version("zfs-2.2.7-1\nzfs-kmod-0.8.6-1\n").unwrap();
        assert_eq!(old.effective(), Version::new(0, 8, 6));
        assert!(!old.capabilities().json_output);
        assert!(old.capabilities().raw_send);
        assert!(parse_version("garbage").is_err());
    }
}
