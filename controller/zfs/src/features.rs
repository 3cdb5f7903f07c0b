//! Pool features: what a pool can do (`zpool get feature@...`). Bookmarks, encrypted
//! datasets and large blocks are pool facts, not release facts: a pool created with
//! `zpool create -d`, or kept at an old feature set for portability, lacks them whatever
//! OpenZFS the node runs.

use tidepool_api::PoolCapabilities;

use crate::parse::PropertyEntry;

/// The features read, each with the capability it sets.
pub const POOL_FEATURES: &[&str] = &[
    "bookmarks",
    "bookmark_v2",
    "encryption",
    "large_blocks",
    "embedded_data",
    "extensible_dataset",
];

fn slot<'a>(caps: &'a mut PoolCapabilities, feature: &str) -> Option<&'a mut bool> {
    Some(match feature {
        "bookmarks" => &mut caps.bookmarks,
        "bookmark_v2" => &mut caps.bookmark_v2,
        "encryption" => &mut caps.encryption,
        "large_blocks" => &mut caps.large_blocks,
        "embedded_data" => &mut caps.embedded_data,
        "extensible_dataset" => &mut caps.extensible_dataset,
        _ => return None,
    })
}

/// Why a feature line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    #[error("{property:?} is not a pool feature Tidepool asked for")]
    UnexpectedProperty { property: String },
    #[error("feature {feature}: state {state:?} is not active, enabled or disabled")]
    UnknownState { feature: String, state: String },
}

/// Sets the capability of one `zpool get` line. `enabled` counts as much as `active`:
/// an enabled feature becomes active the first time it is used, which is what using it
/// means.
pub fn apply_feature_line(
    caps: &mut PoolCapabilities,
    line: &PropertyEntry,
) -> Result<(), FeatureError> {
    let unexpected = || FeatureError::UnexpectedProperty {
        property: line.property.clone(),
    };
    let feature = line
        .property
        .strip_prefix("feature@")
        .ok_or_else(unexpected)?;
    let slot = slot(caps, feature).ok_or_else(unexpected)?;
    *slot = match line.value.as_str() {
        "active" | "enabled" => true,
        "disabled" => false,
        other => {
            return Err(FeatureError::UnknownState {
                feature: feature.to_owned(),
                state: other.to_owned(),
            });
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_get_line;

    #[test]
    fn feature_states() {
        let mut caps = PoolCapabilities::default();
        for line in [
            "tank\tfeature@bookmarks\tenabled\tlocal",
            "tank\tfeature@encryption\tactive\tlocal",
            "tank\tfeature@large_blocks\tdisabled\tlocal",
        ] {
            apply_feature_line(&mut caps, &parse_get_line(line).unwrap()).unwrap();
        }
        assert!(caps.bookmarks && caps.encryption && !caps.large_blocks);
        let bad = parse_get_line("tank\tfeature@bookmarks\tmaybe\tlocal").unwrap();
        assert!(matches!(
            apply_feature_line(&mut caps, &bad),
            Err(FeatureError::UnknownState { .. })
        ));
        let other = parse_get_line("tank\tfeature@zilsaxattr\tactive\tlocal").unwrap();
        assert!(apply_feature_line(&mut caps, &other).is_err());
        let not_feature = parse_get_line("tank\tsize\t1\t-").unwrap();
        assert!(apply_feature_line(&mut caps, &not_feature).is_err());
        // Every feature asked for has a capability to set.
        for f in POOL_FEATURES {
            assert!(slot(&mut PoolCapabilities::default(), f).is_some(), "{f}");
        }
    }
}
