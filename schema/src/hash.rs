//! Hashes used as identities across processes: the aggregator keys its installs by the hash of their
//! `execution_id`, and the alerter names the KV key of a new-signature alert after the hash of the
//! signature. Replicas and restarts must agree, so the function is fixed here and its values are pinned
//! by tests: changing it renames stored alert records.

/// 64-bit FNV-1a with a final mix: stable across processes and versions (replicas agree on it).
pub fn stable_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finalizer: spreads FNV's weak low bits over the whole word.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: u64) {
        assert_eq!(stable_hash(text), expected, "{text:?}");
    }

    #[test]
    fn values_are_pinned() {
        check("", 0xf52a_15e9_a9b5_e89b);
        check("abc-1", 0x72b0_9f34_2256_d807);
        check("E: x", 0x512c_2a30_1d61_9980);
        check("npm ERR! code ERESOLVE", 0x1b2d_decb_d6fa_e7a7);
    }
}
