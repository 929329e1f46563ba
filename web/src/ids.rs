//! The public ids of installs. Every answer (JSON, CSV, HTML) shows a keyed hash of an install's real
//! `execution_id` and `random_id`, never the ids themselves: with the real ids anyone could post a final
//! for someone else's install. The hash is SipHash-2-4 (zero key) over `ID_HASH_KEY` followed by the
//! id, which is exactly ClickHouse's `sipHash64(concat(key, id))` (ClickHouse 18.16 has no keyed
//! SipHash), so a link can be looked up in SQL. A public install id is `YYYYMMDD-<16 hex>`: the UTC day
//! of the install's first event and the hash. The day lets a lookup read only the `installs` partitions
//! of that day (and its neighbours, for a server clock in another time zone) instead of all history.
//! Without `ID_HASH_KEY` a random key is drawn at start: hashes (and links) then change on restart.

use std::hash::{BuildHasher, Hasher};

/// The key and the hash function of public ids.
#[derive(Clone)]
pub struct IdHasher {
    key: String,
}

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdHasher(..)")
    }
}

/// A parsed public install id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicId {
    /// Days since 1970-01-01 (UTC) of the install's first event.
    pub day: i64,
    pub hash: u64,
}

impl IdHasher {
    /// The given key, or a random one (128 bits from the OS-seeded hasher keys of the standard library)
    /// when it is empty.
    pub fn new(key: &str) -> IdHasher {
        if !key.is_empty() {
            return IdHasher {
                key: key.to_string(),
            };
        }
        let random: String = (0..2u8)
            .map(|i| {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u8(i);
                format!("{:016x}", h.finish())
            })
            .collect();
        IdHasher { key: random }
    }

    /// The key, bound into SQL to compute the same hash there.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `sipHash64(concat(key, id))`.
    pub fn hash(&self, id: &str) -> u64 {
        #[allow(deprecated)]
        // std's SipHasher is SipHash-2-4, the function ClickHouse's sipHash64 is.
        let mut h = std::hash::SipHasher::new_with_keys(0, 0);
        h.write(self.key.as_bytes());
        h.write(id.as_bytes());
        h.finish()
    }

    /// The public form of an install id whose first event was at `started_at` (Unix seconds).
    pub fn install(&self, execution_id: &str, started_at: i64) -> String {
        let day = crate::legacy::params::day_text(started_at).replace('-', "");
        format!("{day}-{:016x}", self.hash(execution_id))
    }

    /// The public form of a session id.
    pub fn session(&self, random_id: &str) -> String {
        format!("{:016x}", self.hash(random_id))
    }
}

impl PublicId {
    /// `YYYYMMDD-<16 hex>`, or `None`.
    pub fn parse(text: &str) -> Option<PublicId> {
        let (day, hash) = text.split_once('-')?;
        if day.len() != 8 || hash.len() != 16 || !day.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hash = u64::from_str_radix(hash, 16).ok()?;
        let year: i32 = day[..4].parse().ok()?;
        let month: u8 = day[4..6].parse().ok()?;
        let date = time::Date::from_calendar_date(
            year,
            time::Month::try_from(month).ok()?,
            day[6..].parse().ok()?,
        )
        .ok()?;
        let day = (date - time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?)
            .whole_days();
        Some(PublicId { day, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_stable_and_parse_back() {
        let a = IdHasher::new("k1");
        let b = IdHasher::new("k2");
        assert_eq!(a.hash("id-1"), a.hash("id-1"));
        assert_ne!(a.hash("id-1"), b.hash("id-1"));
        assert_ne!(IdHasher::new("").key(), IdHasher::new("").key());
        let public = a.install("id-1", 1_700_000_000);
        assert!(public.starts_with("20231114-"), "{public}");
        assert!(!public.contains("id-1"));
        assert_eq!(
            PublicId::parse(&public),
            Some(PublicId {
                day: 1_700_000_000 / 86_400,
                hash: a.hash("id-1")
            })
        );
        for bad in [
            "",
            "id-1",
            "20231114-xyz",
            "20231340-0123456789abcdef",
            "2023111-0123456789abcdef0",
        ] {
            assert_eq!(PublicId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_hash_is_clickhouse_siphash64() {
        // SELECT sipHash64('') and sipHash64('abc') on ClickHouse 18.16.
        let h = IdHasher::new("a");
        assert_eq!(
            IdHasher { key: String::new() }.hash(""),
            0x1e92_4b9d_7377_00d7
        );
        assert_eq!(h.hash("bc"), 0x3fc8_8496_4770_eede);
    }
}
