//! What a replication step asks of `zfs send` and `zfs receive`. The planner emits these,
//! the zfs layer turns them into argv as they are, and the controller hands them to agents:
//! one type per concept, checked once, when it is made.

use serde::{Deserialize, Deserializer, Serialize};
use tidepool_api::DatasetName;
use tidepool_api::receive_property::{ExcludedProperty, RESERVED_PROPERTIES, ReceiveProperty};
use tidepool_api::values::PropertyName;

/// `zfs send` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendFlags {
    /// `-w`: raw (still-encrypted blocks, as on disk); required to send an encrypted
    /// dataset without its key.
    pub raw: bool,
    /// `-c`: compressed blocks as on disk.
    pub compressed: bool,
    /// `-L`: records larger than 128 KiB.
    pub large_blocks: bool,
    /// `-e`: embedded-data blocks.
    pub embedded_data: bool,
    /// `-p`: include the dataset's properties.
    pub properties: bool,
}

/// Why a set of receive options was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveOptionsError {
    /// `zfs receive` refuses `-o p=..` together with `-x p`.
    #[error("{name} is both set and excluded")]
    SetAndExcluded { name: PropertyName },
    #[error("{name} is set twice")]
    SetTwice { name: PropertyName },
    #[error("{name} is excluded twice")]
    ExcludedTwice { name: PropertyName },
}

/// `zfs receive` of a replication step.
///
/// What every receive does, whatever a policy says, because the types leave no way to say
/// otherwise:
/// - never `-F`: a receive never rolls back or destroys what the target has (divergence is
///   handled above, DESIGN.md);
/// - always `-u`: a replica is received unmounted, never mounted where a stream or a
///   tenant chose;
/// - always `-x` for each of Tidepool's own properties ([`Self::always_excluded`]), so an
///   owner that arrived in a stream is never a claim on the target;
/// - `-o`/`-x` only with [`ReceiveProperty`]/[`ExcludedProperty`], whose constructors
///   apply the allowlist of [`tidepool_api::receive_property`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiveOptions {
    /// The filesystem or volume the stream lands in; snapshots keep their sent names.
    target: DatasetName,
    /// `-s`: keep a partial receive and leave a `receive_resume_token`.
    resumable: bool,
    /// `-o name=value`.
    set: Vec<ReceiveProperty>,
    /// `-x name`.
    exclude: Vec<ExcludedProperty>,
}

impl ReceiveOptions {
    /// Resumable, nothing set or excluded beyond what every receive excludes.
    pub fn new(target: DatasetName) -> ReceiveOptions {
        ReceiveOptions {
            target,
            resumable: true,
            set: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// With a policy's properties to set and to exclude.
    pub fn with_properties(
        target: DatasetName,
        set: Vec<ReceiveProperty>,
        exclude: Vec<ExcludedProperty>,
    ) -> Result<ReceiveOptions, ReceiveOptionsError> {
        for (i, p) in set.iter().enumerate() {
            if set[..i].iter().any(|q| q.name() == p.name()) {
                return Err(ReceiveOptionsError::SetTwice {
                    name: p.name().clone(),
                });
            }
            if exclude.iter().any(|x| x.name() == p.name()) {
                return Err(ReceiveOptionsError::SetAndExcluded {
                    name: p.name().clone(),
                });
            }
        }
        for (i, x) in exclude.iter().enumerate() {
            if exclude[..i].iter().any(|y| y.name() == x.name()) {
                return Err(ReceiveOptionsError::ExcludedTwice {
                    name: x.name().clone(),
                });
            }
        }
        Ok(ReceiveOptions {
            target,
            resumable: true,
            set,
            exclude,
        })
    }

    /// Without `-s`: an interrupted receive leaves nothing to resume.
    pub fn not_resumable(mut self) -> ReceiveOptions {
        self.resumable = false;
        self
    }

    pub fn target(&self) -> &DatasetName {
        &self.target
    }

    pub fn resumable(&self) -> bool {
        self.resumable
    }

    pub fn set(&self) -> &[ReceiveProperty] {
        &self.set
    }

    pub fn exclude(&self) -> &[ExcludedProperty] {
        &self.exclude
    }

    /// Excluded from every stream: Tidepool's own properties. A policy can name none of
    /// them ([`ExcludedProperty`] refuses), so they never appear twice.
    pub fn always_excluded() -> impl Iterator<Item = PropertyName> {
        RESERVED_PROPERTIES.iter().filter_map(|p| p.parse().ok())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceiveOptionsWire {
    target: DatasetName,
    #[serde(default = "yes")]
    resumable: bool,
    #[serde(default)]
    set: Vec<ReceiveProperty>,
    #[serde(default)]
    exclude: Vec<ExcludedProperty>,
}

fn yes() -> bool {
    true
}

/// Decoded through the same checks as [`ReceiveOptions::with_properties`] (and each
/// property through the allowlist): an agent never receives with options a controller
/// could not have built.
impl<'de> Deserialize<'de> for ReceiveOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = ReceiveOptionsWire::deserialize(d)?;
        let options = ReceiveOptions::with_properties(w.target, w.set, w.exclude)
            .map_err(serde::de::Error::custom)?;
        Ok(if w.resumable {
            options
        } else {
            options.not_resumable()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(s: &str) -> DatasetName {
        s.parse().unwrap()
    }

    #[test]
    fn conflicting_properties_are_refused() {
        let ro = || ReceiveProperty::new("readonly", "on").unwrap();
        let x_ro = || ExcludedProperty::new("readonly").unwrap();
        assert!(matches!(
            ReceiveOptions::with_properties(ds("b/a"), vec![ro()], vec![x_ro()]),
            Err(ReceiveOptionsError::SetAndExcluded { .. })
        ));
        assert!(matches!(
            ReceiveOptions::with_properties(ds("b/a"), vec![ro(), ro()], vec![]),
            Err(ReceiveOptionsError::SetTwice { .. })
        ));
        assert!(matches!(
            ReceiveOptions::with_properties(ds("b/a"), vec![], vec![x_ro(), x_ro()]),
            Err(ReceiveOptionsError::ExcludedTwice { .. })
        ));
        assert!(ReceiveOptions::with_properties(ds("b/a"), vec![ro()], vec![]).is_ok());
    }

    #[test]
    fn wire_round_trip_and_refusals() {
        let o = ReceiveOptions::with_properties(
            ds("back/a"),
            vec![ReceiveProperty::new("compression", "zstd").unwrap()],
            vec![ExcludedProperty::new("atime").unwrap()],
        )
        .unwrap();
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"target":"back/a","resumable":true,"set":[{"name":"compression","value":"zstd"}],"exclude":["atime"]}"#
        );
        assert_eq!(serde_json::from_str::<ReceiveOptions>(&json).unwrap(), o);
        for bad in [
            r#"{"target":"back/a","set":[{"name":"mountpoint","value":"/etc"}]}"#,
            r#"{"target":"back/a","exclude":["tidepool.dev:owner"]}"#,
            r#"{"target":"back/a","set":[{"name":"atime","value":"on"}],"exclude":["atime"]}"#,
            r#"{"target":"back/a;reboot"}"#,
        ] {
            assert!(
                serde_json::from_str::<ReceiveOptions>(bad).is_err(),
                "{bad}"
            );
        }
        let flags: SendFlags = serde_json::from_str(r#"{"raw":true}"#).unwrap();
        assert_eq!(
            flags,
            SendFlags {
                raw: true,
                ..SendFlags::default()
            }
        );
    }

    #[test]
    fn every_reserved_property_is_always_excluded() {
        let always: Vec<PropertyName> = ReceiveOptions::always_excluded().collect();
        assert_eq!(always.len(), RESERVED_PROPERTIES.len());
        assert!(
            always
                .iter()
                .any(|p| p.as_str() == tidepool_api::OWNER_PROPERTY)
        );
    }
}
