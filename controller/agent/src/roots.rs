//! The admin's allowlist of dataset roots: whatever the controller asks, the agent touches
//! nothing outside it. Every operation calls [`DatasetRoots::check`] on every dataset it
//! names before it builds any argv.

use std::fmt;

use tidepool_api::names::DatasetName;

/// The dataset roots this agent may act on. A dataset is permitted when it equals a root
/// or lies below one, compared component by component (`tank/app` is below `tank` but not
/// below `tank/ap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetRoots(Vec<DatasetName>);

/// A dataset outside every configured root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dataset {dataset} is outside this agent's dataset roots ({roots})")]
pub struct OutsideRoots {
    pub dataset: DatasetName,
    pub roots: DatasetRoots,
}

impl DatasetRoots {
    /// An empty list permits nothing: an agent with no roots configured is safe, not open.
    pub fn new(roots: impl IntoIterator<Item = DatasetName>) -> Self {
        Self(roots.into_iter().collect())
    }

    pub fn as_slice(&self) -> &[DatasetName] {
        &self.0
    }

    /// `Ok` when `dataset` is a root or below one.
    pub fn check(&self, dataset: &DatasetName) -> Result<(), OutsideRoots> {
        if self.0.iter().any(|root| root.contains(dataset)) {
            Ok(())
        } else {
            Err(OutsideRoots {
                dataset: dataset.clone(),
                roots: self.clone(),
            })
        }
    }
}

impl fmt::Display for DatasetRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none configured");
        }
        for (i, root) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(root.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DatasetName {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} is a valid dataset name: {e}"))
    }

    fn roots(list: &[&str]) -> DatasetRoots {
        DatasetRoots::new(list.iter().map(|s| name(s)))
    }

    #[test]
    fn permits_a_root_and_what_lies_below_it() {
        let r = roots(&["tank/app", "backup"]);
        for ok in [
            "tank/app",
            "tank/app/db",
            "tank/app/db/wal",
            "backup",
            "backup/x",
        ] {
            assert_eq!(r.check(&name(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn compares_whole_components_not_prefixes() {
        let r = roots(&["tank/ap", "tank/app.d"]);
        for outside in [
            "tank/app", // `tank/ap` is a prefix of the text, not a parent
            "tank/apx",
            "tank/app.db", // prefix `tank/app.d` again
            "tank/ap_",
            "tank/ap-",
            "tank/ap:x",
            "tank",      // a parent of a root is not permitted
            "tanker/ap", // another pool whose name starts the same
            "tank2/ap",
        ] {
            assert!(
                r.check(&name(outside)).is_err(),
                "{outside} must be refused"
            );
        }
        assert_eq!(r.check(&name("tank/ap/p")), Ok(()));
        assert_eq!(r.check(&name("tank/app.d/x")), Ok(()));
    }

    #[test]
    fn a_pool_root_permits_the_whole_pool_only() {
        let r = roots(&["tank"]);
        assert_eq!(r.check(&name("tank")), Ok(()));
        assert_eq!(r.check(&name("tank/a/b/c")), Ok(()));
        assert!(r.check(&name("tankx")).is_err());
        assert!(r.check(&name("tan")).is_err());
    }

    #[test]
    fn no_roots_permit_nothing() {
        let r = DatasetRoots::new([]);
        let refused = r.check(&name("tank")).expect_err("nothing is permitted");
        assert_eq!(
            refused.to_string(),
            "dataset tank is outside this agent's dataset roots (none configured)"
        );
    }

    #[test]
    fn the_refusal_names_the_dataset_and_the_roots() {
        let refused = roots(&["tank/a", "tank/b"])
            .check(&name("tank/c"))
            .expect_err("outside");
        assert_eq!(
            refused.to_string(),
            "dataset tank/c is outside this agent's dataset roots (tank/a, tank/b)"
        );
    }
}
