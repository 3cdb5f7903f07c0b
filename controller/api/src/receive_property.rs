//! What a namespaced `ReplicationPolicy` may set (`zfs receive -o`) or exclude (`-x`) on a
//! replica (DESIGN.md, safety rules: a tenant never chooses what a root `zfs receive` on
//! another node mounts where).
//!
//! An allowlist, not a denylist: a property OpenZFS adds later is refused until someone
//! decides it is harmless. Allowed are
//! - the native properties in [`NATIVE`], each with the values it may take (`canmount` only
//!   `off` or `noauto`, and it cannot be excluded: excluding it makes it `on`);
//! - user properties (names with a `:`) outside `tidepool.dev:`, with any value that has no
//!   control character and 1 to [`MAX_VALUE_CHARS`] characters.
//!
//! Never `mountpoint`, `sharenfs`, `sharesmb`, `setuid`, `exec`, `devices`, `zoned`,
//! `keylocation`, `canmount=on` nor any `tidepool.dev:*` property ([`RESERVED_PREFIX`]):
//! Tidepool's own properties are always excluded from what a stream sets on a replica
//! ([`RESERVED_PROPERTIES`]), and a policy can neither override nor exclude them.
//!
//! The same table makes the CRD's CEL rules ([`cel`]) and the checks of
//! [`ReceiveProperty::new`] and [`ExcludedProperty::new`], so admission and the code that
//! builds the receive refuse the same things; tests in this module and in `tests/` hold
//! both to it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::values::{PropertyName, PropertyValue, ValueError};
use crate::{DRILL_PROPERTY, OWNER_PROPERTY};

/// Properties under this prefix are Tidepool's alone.
pub const RESERVED_PREFIX: &str = "tidepool.dev:";

/// Tidepool's own properties: `zfs receive` always gets `-x` for each, so a stream never
/// sets them on a replica (an owner that arrived in a stream would otherwise look like a
/// claim to the target's retention).
pub const RESERVED_PROPERTIES: &[&str] = &[OWNER_PROPERTY, DRILL_PROPERTY];

/// The longest value a policy may set, in characters (the schema's `maxLength` counts
/// characters; 1024 of them are at most 4096 bytes, well inside [`PropertyValue`]'s limit).
pub const MAX_VALUE_CHARS: usize = 1024;

/// A native property a policy may set or exclude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeProperty {
    pub name: &'static str,
    /// The values a policy may set it to.
    pub values: &'static [&'static str],
    /// Whether `-x` is allowed: only where the value the replica then inherits is as safe
    /// as any allowed one.
    pub excludable: bool,
}

const ON_OFF: &[&str] = &["on", "off"];

const COMPRESSION: &[&str] = &[
    "on",
    "off",
    "lz4",
    "lzjb",
    "zle",
    "gzip",
    "gzip-1",
    "gzip-2",
    "gzip-3",
    "gzip-4",
    "gzip-5",
    "gzip-6",
    "gzip-7",
    "gzip-8",
    "gzip-9",
    "zstd",
    "zstd-1",
    "zstd-2",
    "zstd-3",
    "zstd-4",
    "zstd-5",
    "zstd-6",
    "zstd-7",
    "zstd-8",
    "zstd-9",
    "zstd-10",
    "zstd-11",
    "zstd-12",
    "zstd-13",
    "zstd-14",
    "zstd-15",
    "zstd-16",
    "zstd-17",
    "zstd-18",
    "zstd-19",
    "zstd-fast",
    "zstd-fast-1",
    "zstd-fast-2",
    "zstd-fast-3",
    "zstd-fast-4",
    "zstd-fast-5",
    "zstd-fast-6",
    "zstd-fast-7",
    "zstd-fast-8",
    "zstd-fast-9",
    "zstd-fast-10",
    "zstd-fast-20",
    "zstd-fast-30",
    "zstd-fast-40",
    "zstd-fast-50",
    "zstd-fast-60",
    "zstd-fast-70",
    "zstd-fast-80",
    "zstd-fast-90",
    "zstd-fast-100",
    "zstd-fast-500",
    "zstd-fast-1000",
];

/// The record sizes OpenZFS 2.3 accepts, spelled as `zfs get` prints them without `-p`.
const RECORDSIZE: &[&str] = &[
    "512", "1K", "2K", "4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M", "4M",
    "8M", "16M",
];

const CACHE: &[&str] = &["all", "none", "metadata"];

/// The native properties a policy may touch on a replica. Each only changes how the
/// replica stores or exposes its own data, never where or whether it is mounted, shared or
/// decrypted, nor anything of the node around it.
pub const NATIVE: &[NativeProperty] = &[
    NativeProperty {
        name: "atime",
        values: ON_OFF,
        excludable: true,
    },
    NativeProperty {
        name: "relatime",
        values: ON_OFF,
        excludable: true,
    },
    NativeProperty {
        name: "readonly",
        values: ON_OFF,
        excludable: true,
    },
    NativeProperty {
        name: "compression",
        values: COMPRESSION,
        excludable: true,
    },
    NativeProperty {
        name: "recordsize",
        values: RECORDSIZE,
        excludable: true,
    },
    NativeProperty {
        name: "primarycache",
        values: CACHE,
        excludable: true,
    },
    NativeProperty {
        name: "secondarycache",
        values: CACHE,
        excludable: true,
    },
    NativeProperty {
        name: "logbias",
        values: &["latency", "throughput"],
        excludable: true,
    },
    // `on` would mount the replica at a mountpoint the stream may carry; excluding it
    // yields the default, `on`, so it cannot be excluded either.
    NativeProperty {
        name: "canmount",
        values: &["off", "noauto"],
        excludable: false,
    },
];

fn native(name: &str) -> Option<&'static NativeProperty> {
    NATIVE.iter().find(|p| p.name == name)
}

fn is_user_property(name: &str) -> bool {
    name.contains(':')
}

/// Why a policy may not set or exclude a property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceivePropertyError {
    #[error(transparent)]
    InvalidName(ValueError),
    #[error(
        "{name} is Tidepool's own property (tidepool.dev:*): a policy can neither set nor exclude it"
    )]
    Reserved { name: String },
    #[error(
        "{name} may not be set or excluded on a replica (a policy may touch only {}, and user properties outside tidepool.dev:)",
        native_names()
    )]
    NotAllowed { name: String },
    #[error("{name} may not be excluded on a replica: the value it would inherit is not safe")]
    NotExcludable { name: String },
    #[error("{name}={value:?} is not allowed on a replica; allowed values: {}", .allowed.join(", "))]
    ValueNotAllowed {
        name: String,
        value: String,
        allowed: &'static [&'static str],
    },
    #[error("value of {name}: {source}")]
    InvalidValue {
        name: String,
        #[source]
        source: ValueError,
    },
    /// Whether zfs reads an empty value as "unset" differs between commands; a policy has
    /// no need for one.
    #[error("value of {name} is empty")]
    EmptyValue { name: String },
    #[error("value of {name} is {chars} characters long, more than the {MAX_VALUE_CHARS} allowed")]
    ValueTooLong { name: String, chars: usize },
}

fn native_names() -> String {
    NATIVE.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

/// The checks both setting and excluding share.
fn check_name(name: &str) -> Result<PropertyName, ReceivePropertyError> {
    let parsed: PropertyName = name.parse().map_err(ReceivePropertyError::InvalidName)?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(ReceivePropertyError::Reserved {
            name: name.to_owned(),
        });
    }
    if !is_user_property(name) && native(name).is_none() {
        return Err(ReceivePropertyError::NotAllowed {
            name: name.to_owned(),
        });
    }
    Ok(parsed)
}

/// A `zfs receive -o name=value` a policy may ask for. The only way to make one is
/// [`ReceiveProperty::new`] (serde goes through it too), so holding one proves it passed
/// the allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReceiveProperty {
    name: PropertyName,
    value: PropertyValue,
}

impl ReceiveProperty {
    pub fn new(name: &str, value: &str) -> Result<ReceiveProperty, ReceivePropertyError> {
        let parsed_name = check_name(name)?;
        let parsed_value: PropertyValue =
            value
                .parse()
                .map_err(|source| ReceivePropertyError::InvalidValue {
                    name: name.to_owned(),
                    source,
                })?;
        let chars = value.chars().count();
        if chars == 0 {
            return Err(ReceivePropertyError::EmptyValue {
                name: name.to_owned(),
            });
        }
        if chars > MAX_VALUE_CHARS {
            return Err(ReceivePropertyError::ValueTooLong {
                name: name.to_owned(),
                chars,
            });
        }
        if let Some(p) = native(name)
            && !p.values.contains(&value)
        {
            return Err(ReceivePropertyError::ValueNotAllowed {
                name: name.to_owned(),
                value: value.to_owned(),
                allowed: p.values,
            });
        }
        Ok(ReceiveProperty {
            name: parsed_name,
            value: parsed_value,
        })
    }

    pub fn name(&self) -> &PropertyName {
        &self.name
    }

    pub fn value(&self) -> &PropertyValue {
        &self.value
    }
}

impl fmt::Display for ReceiveProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// A `zfs receive -x name` a policy may ask for; made only by [`ExcludedProperty::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExcludedProperty(PropertyName);

impl ExcludedProperty {
    pub fn new(name: &str) -> Result<ExcludedProperty, ReceivePropertyError> {
        let parsed = check_name(name)?;
        if native(name).is_some_and(|p| !p.excludable) {
            return Err(ReceivePropertyError::NotExcludable {
                name: name.to_owned(),
            });
        }
        Ok(ExcludedProperty(parsed))
    }

    pub fn name(&self) -> &PropertyName {
        &self.0
    }
}

impl fmt::Display for ExcludedProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[derive(Serialize, Deserialize)]
struct ReceivePropertyWire {
    name: String,
    value: String,
}

impl Serialize for ReceiveProperty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReceivePropertyWire {
            name: self.name.to_string(),
            value: self.value.to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ReceiveProperty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = ReceivePropertyWire::deserialize(d)?;
        ReceiveProperty::new(&w.name, &w.value).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ExcludedProperty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for ExcludedProperty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ExcludedProperty::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The CEL rules the CRD carries, generated from the same table.
pub mod cel {
    use super::{NATIVE, RESERVED_PREFIX};

    fn list(items: impl IntoIterator<Item = &'static str>) -> String {
        let quoted: Vec<String> = items.into_iter().map(|s| format!("'{s}'")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// On an override item (`self` is `{name, value}`): the name is allowed.
    pub fn settable_name() -> String {
        format!(
            "self.name.contains(':') ? !self.name.startsWith('{RESERVED_PREFIX}') : self.name in {}",
            list(NATIVE.iter().map(|p| p.name))
        )
    }

    pub fn settable_name_message() -> String {
        format!(
            "a policy may set on a replica only {} and user properties outside {RESERVED_PREFIX} (never mountpoint, sharenfs, sharesmb, setuid, exec, devices, zoned, keylocation or {RESERVED_PREFIX}*)",
            super::native_names()
        )
    }

    /// On an override item: for each native property, the value is one of its values.
    pub fn value_rules() -> Vec<(String, String)> {
        NATIVE
            .iter()
            .map(|p| {
                let rule = format!(
                    "self.name != '{}' || self.value in {}",
                    p.name,
                    list(p.values.iter().copied())
                );
                let message = if p.values.len() <= 8 {
                    format!(
                        "{} may be set on a replica only to {}",
                        p.name,
                        p.values.join(", ")
                    )
                } else {
                    format!("{} must be one of the values OpenZFS 2.3 names", p.name)
                };
                (rule, message)
            })
            .collect()
    }

    /// On `excludeProperties` (`self` is the list of names).
    pub fn excludable_names() -> String {
        format!(
            "self.all(p, p.contains(':') ? !p.startsWith('{RESERVED_PREFIX}') : p in {})",
            list(NATIVE.iter().filter(|p| p.excludable).map(|p| p.name))
        )
    }

    pub fn excludable_names_message() -> String {
        format!(
            "a policy may exclude on a replica only {} and user properties outside {RESERVED_PREFIX}",
            NATIVE
                .iter()
                .filter(|p| p.excludable)
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

#[cfg(test)]
mod tests;
