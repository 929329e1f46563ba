//! The contract's id rule (§3: `^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`) for `random_id` and `execution_id`.
//! `validate` applies it to client bodies; the writer applies it again at the store, so an id reaches a
//! PocketBase filter only if it passes, whatever was published to the stream.

use crate::validate::MAX_ID_LEN;

/// True when `id` follows the contract's id rule.
pub fn valid_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same verdict as the edge's validation for the same id.
    fn check(id: &str, expected: bool) {
        assert_eq!(valid_id(id), expected, "{id:?}");
        let body = serde_json::json!({"random_id": id, "type": "lxc", "nsapp": "x", "status": "installing"});
        let edge = crate::validate(body.to_string().as_bytes(), crate::Reception::now()).is_ok();
        assert_eq!(edge, expected, "edge disagrees on {id:?}");
    }

    #[test]
    fn follows_the_contract_rule() {
        check("3f2b8c1e-9d4a-4b7e-8c21-6a5f0e9d7b12", true);
        check("a", true);
        check("a.b_c:d-e", true);
        check(&"a".repeat(64), true);
        check(&"a".repeat(65), false);
        check("-a", false);
        check("a'b", false);
        check("a\"b", false);
        check("a' || id != '", false);
        check("a b", false);
        check("a\\b", false);
        check("é", false);
    }
}
