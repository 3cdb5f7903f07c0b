//! A small cache of successful TokenReviews, so a busy controller does not cost one
//! TokenReview per request.
//!
//! Keys are SHA-256 digests of the tokens, never the tokens, so a memory dump does not hand
//! out credentials. An entry lives at most the configured time-to-live and never past the
//! token's own expiry; a token revoked early (its Pod deleted) therefore stays accepted for
//! at most the time-to-live, which is why it is short.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use ring::digest::{SHA256, digest};

type TokenDigest = [u8; 32];

#[derive(Debug)]
pub(crate) struct ReviewCache {
    capacity: usize,
    ttl: SignedDuration,
    entries: HashMap<TokenDigest, Timestamp>,
}

impl ReviewCache {
    pub(crate) fn new(capacity: usize, ttl: SignedDuration) -> Self {
        Self {
            capacity,
            ttl,
            entries: HashMap::new(),
        }
    }

    /// Whether `token` was reviewed successfully and its entry has not expired at `now`.
    pub(crate) fn is_fresh(&mut self, token: &str, now: Timestamp) -> bool {
        let key = key_of(token);
        match self.entries.get(&key) {
            Some(&until) if now < until => true,
            Some(_) => {
                self.entries.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers a successful review made at `now` of a token that expires at
    /// `token_expiry` (when it could be read). Expired entries go first when the cache is
    /// full, then the one closest to expiry, so the size stays bounded.
    pub(crate) fn remember(
        &mut self,
        token: &str,
        token_expiry: Option<Timestamp>,
        now: Timestamp,
    ) {
        if self.capacity == 0 {
            return;
        }
        let by_ttl = now.saturating_add(self.ttl).unwrap_or(now);
        let until = token_expiry.map_or(by_ttl, |expiry| expiry.min(by_ttl));
        if until <= now {
            return;
        }
        let key = key_of(token);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, until| now < *until);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(key, _)| *key)
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, until);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn key_of(token: &str) -> TokenDigest {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn an_entry_lives_for_the_ttl() {
        let mut cache = ReviewCache::new(4, SignedDuration::from_secs(10));
        cache.remember("t", None, at(0));
        assert!(cache.is_fresh("t", at(9)));
        assert!(!cache.is_fresh("t", at(10)));
        assert!(!cache.is_fresh("other", at(1)));
    }

    #[test]
    fn an_entry_never_outlives_its_token() {
        let mut cache = ReviewCache::new(4, SignedDuration::from_secs(10));
        cache.remember("t", Some(at(3)), at(0));
        assert!(cache.is_fresh("t", at(2)));
        assert!(!cache.is_fresh("t", at(3)));
        // A token already expired is not cached at all.
        cache.remember("old", Some(at(0)), at(0));
        assert!(!cache.is_fresh("old", at(0)));
    }

    #[test]
    fn the_size_stays_bounded_and_the_soonest_to_expire_goes_first() {
        let mut cache = ReviewCache::new(2, SignedDuration::from_secs(100));
        cache.remember("a", Some(at(50)), at(0));
        cache.remember("b", Some(at(20)), at(0));
        cache.remember("c", None, at(0));
        assert_eq!(cache.len(), 2);
        assert!(cache.is_fresh("a", at(1)));
        assert!(!cache.is_fresh("b", at(1)));
        assert!(cache.is_fresh("c", at(1)));
    }

    #[test]
    fn expired_entries_are_dropped_before_live_ones() {
        let mut cache = ReviewCache::new(2, SignedDuration::from_secs(100));
        cache.remember("short", Some(at(5)), at(0));
        cache.remember("long", None, at(0));
        cache.remember("new", None, at(10));
        assert!(cache.is_fresh("long", at(11)));
        assert!(cache.is_fresh("new", at(11)));
    }

    #[test]
    fn a_zero_capacity_cache_remembers_nothing() {
        let mut cache = ReviewCache::new(0, SignedDuration::from_secs(100));
        cache.remember("t", None, at(0));
        assert!(!cache.is_fresh("t", at(0)));
    }
}
