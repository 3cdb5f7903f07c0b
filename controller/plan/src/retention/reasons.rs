//! Why a snapshot is kept or destroyed: bounded codes for status, events and metrics.

use std::fmt;

/// Why a snapshot is kept: a set of these bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepReasons(u16);

impl KeepReasons {
    pub const NEWEST: Self = Self(1);
    pub const LAST: Self = Self(1 << 1);
    pub const WITHIN: Self = Self(1 << 2);
    pub const HOURLY: Self = Self(1 << 3);
    pub const DAILY: Self = Self(1 << 4);
    pub const WEEKLY: Self = Self(1 << 5);
    pub const MONTHLY: Self = Self(1 << 6);
    pub const YEARLY: Self = Self(1 << 7);
    pub const HELD: Self = Self(1 << 8);
    pub const REPLICATION_BASE: Self = Self(1 << 9);
    pub const TRANSFER_IN_USE: Self = Self(1 << 10);

    /// The bucket rules, finest period first.
    pub const BUCKETS: [Self; 5] = [
        Self::HOURLY,
        Self::DAILY,
        Self::WEEKLY,
        Self::MONTHLY,
        Self::YEARLY,
    ];

    const NAMES: [(Self, &'static str); 11] = [
        (Self::NEWEST, "newest"),
        (Self::LAST, "keepLast"),
        (Self::WITHIN, "keepWithin"),
        (Self::HOURLY, "hourly"),
        (Self::DAILY, "daily"),
        (Self::WEEKLY, "weekly"),
        (Self::MONTHLY, "monthly"),
        (Self::YEARLY, "yearly"),
        (Self::HELD, "held"),
        (Self::REPLICATION_BASE, "replication base"),
        (Self::TRANSFER_IN_USE, "transfer in use"),
    ];

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(super) fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Kept whatever the rules say (newest, held, protected).
    pub fn is_safety(self) -> bool {
        [
            Self::NEWEST,
            Self::HELD,
            Self::REPLICATION_BASE,
            Self::TRANSFER_IN_USE,
        ]
        .into_iter()
        .any(|bit| self.contains(bit))
    }
}

impl fmt::Display for KeepReasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.contains(bit) {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Why a snapshot is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyReason {
    /// Owned by the object, and no rule keeps it.
    Expired,
}

impl DestroyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DestroyReason::Expired => "RetentionExpired",
        }
    }
}
