//! Percent-encoding of URL parts the fleet builds (dashboard links in mails, PocketBase filters, the
//! web's own links), one rule for all: everything but RFC 3986's unreserved characters is encoded, so
//! an app name with spaces, capitals, slashes or quotes is one safe path segment or query value.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Every byte but `A-Z a-z 0-9 - _ . ~`.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` as one path segment or query value.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &str) {
        assert_eq!(encode(text), expected, "{text:?}");
    }

    #[test]
    fn only_unreserved_characters_stay() {
        check("docker", "docker");
        check("Home Assistant", "Home%20Assistant");
        check("a-b_c.d~e", "a-b_c.d~e");
        check("a/b?c=d&e#f", "a%2Fb%3Fc%3Dd%26e%23f");
        check("(execution_id='x')", "%28execution_id%3D%27x%27%29");
        check("é", "%C3%A9");
        check("", "");
    }
}
