//! Privacy of the free-text `error` field (contract §3): addresses that could identify a machine or a
//! person are masked before anything is stored, and overlong logs are cut to the first line and the end.

use std::borrow::Cow;
use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// Longest `error` kept, in bytes.
pub const MAX_ERROR_BYTES: usize = 131_072;
/// Longest first line kept when a log is cut.
const MAX_HEAD_BYTES: usize = 1024;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .expect("email pattern")
});
static MAC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\b|\b[0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5}\b")
        .expect("mac pattern")
});
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    // The optional dotted tail takes in IPv4-mapped addresses (`::ffff:192.168.1.1`) whole.
    Regex::new(r"[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?:(?:\.[0-9]{1,3}){3})?")
        .expect("ipv6 pattern")
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b")
        .expect("ipv4 pattern")
});

/// Masks e-mail, MAC, IPv6 and IPv4 addresses. IPv4 keeps its first octet (`192.x.x.x`); a dotted
/// version number (`2.4.1.3-1`, `v1.2.3.4`, `version 1.2.3.4`, `1.2.3.4.5`) is left intact.
pub fn mask(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    replace(&mut out, &EMAIL, |_, _| Some("x@x.x".to_string()));
    replace(&mut out, &MAC, |_, _| Some("xx:xx:xx:xx:xx:xx".to_string()));
    replace(&mut out, &IPV6, mask_ipv6);
    replace(&mut out, &IPV4, mask_ipv4);
    out
}

/// Replaces every match for which `f` returns a value; leaves the text borrowed when nothing changes.
fn replace(text: &mut Cow<'_, str>, re: &Regex, f: impl Fn(&str, &Captures) -> Option<String>) {
    if !re.is_match(text) {
        return;
    }
    let haystack: &str = text;
    let replaced = re.replace_all(haystack, |caps: &Captures| {
        f(haystack, caps).unwrap_or_else(|| caps[0].to_string())
    });
    if let Cow::Owned(new) = replaced {
        *text = Cow::Owned(new);
    }
}

fn mask_ipv6(haystack: &str, caps: &Captures) -> Option<String> {
    let m = caps.get(0)?;
    let before = haystack[..m.start()].chars().next_back();
    let after = haystack[m.end()..].chars().next();
    let glued = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
    // A dot that goes on (`::ffff:10.x.x.x`, an IPv4-mapped address masked before) is part of the
    // token; a dot that ends a sentence is not.
    let mut rest = haystack[m.end()..].chars();
    let dotted = rest.next() == Some('.') && rest.next().is_some_and(|c| c.is_alphanumeric());
    if glued(before) || glued(after) || dotted || !m.as_str().bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    m.as_str().parse::<Ipv6Addr>().ok()?;
    let first = m.as_str().split(':').next().unwrap_or_default();
    Some(if first.is_empty() {
        "x::x".to_string()
    } else {
        format!("{first}:x::x")
    })
}

fn mask_ipv4(haystack: &str, caps: &Captures) -> Option<String> {
    let m = caps.get(0)?;
    let before = &haystack[..m.start()];
    let after = &haystack[m.end()..];
    let prev = before.chars().next_back();
    let mut next = after.chars();
    let (n1, n2) = (next.next(), next.next());
    // Glued to a version-like neighbour: 1.2.3.4.5, x-1.2.3.4, 1.2.3.4-1, 1.2.3.4+dfsg, ~1.2.3.4.
    let version_prev = prev.is_some_and(|c| matches!(c, '.' | '-' | '_' | '+' | '~'));
    let version_next = match n1 {
        Some('.') => n2.is_some_and(|c| c.is_ascii_digit()),
        Some(c) => {
            matches!(c, '-' | '+' | '~' | '_') && n2.is_some_and(|c| c.is_ascii_alphanumeric())
        }
        None => false,
    };
    let word_before = before
        .trim_end_matches([' ', ':', '='])
        .rsplit(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let named_version = matches!(
        word_before.as_str(),
        "version" | "ver" | "v" | "release" | "firmware"
    );
    if version_prev || version_next || named_version {
        return None;
    }
    Some(format!("{}.x.x.x", &caps[1]))
}

/// Cuts a log longer than `max` bytes to its first line and its end, with a marker of what was cut.
pub fn cut_log(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let first_line = text.split('\n').next().unwrap_or_default();
    let head = cut_at_char(first_line, MAX_HEAD_BYTES.min(max / 4));
    // The marker's length depends on the number it carries; reserve room for the widest.
    let marker_room = "\n[... 000000000000 bytes cut ...]\n".len();
    let tail_len = max.saturating_sub(head.len() + marker_room);
    let mut tail_start = text.len() - tail_len;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let cut = tail_start - head.len();
    Cow::Owned(format!(
        "{head}\n[... {cut} bytes cut ...]\n{}",
        &text[tail_start..]
    ))
}

/// The longest prefix of `text` of at most `max` bytes that ends at a character boundary.
pub fn cut_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(mask(input), expected, "input {input:?}");
    }

    #[test]
    fn ipv4_keeps_the_first_octet() {
        check(
            "connect to 192.168.1.10 failed",
            "connect to 192.x.x.x failed",
        );
        check("http://10.0.0.1:8080/x", "http://10.x.x.x:8080/x");
        check("(8.8.8.8)", "(8.x.x.x)");
        check("|172.16.5.196|:443", "|172.x.x.x|:443");
        check("255.255.255.255", "255.x.x.x");
        check("ip=1.2.3.4,", "ip=1.x.x.x,");
    }

    #[test]
    fn masking_twice_changes_nothing() {
        for input in [
            "from ::FFFF:10.1.2.3:5432",
            "from ::ffff:192.168.1.1 and fe80::1.",
            "mac aa:bb:cc:dd:ee:ff, mail a@b.example, 10.0.0.1 and 2001:db8::1",
        ] {
            let once = mask(input).into_owned();
            assert_eq!(mask(&once), once, "input {input:?}");
        }
        check("ends at fe80::1.", "ends at fe80:x::x.");
    }

    #[test]
    fn version_numbers_stay() {
        check(
            "Setting up foo (2.4.1.3-1) ...",
            "Setting up foo (2.4.1.3-1) ...",
        );
        check("version 2.4.1.3", "version 2.4.1.3");
        check("v1.2.3.4", "v1.2.3.4");
        check("1.2.3.4.5", "1.2.3.4.5");
        check("pkg-1.2.3.4", "pkg-1.2.3.4");
        check("1.2.3.4+dfsg", "1.2.3.4+dfsg");
        check("9.0.10", "9.0.10");
        check("300.1.1.1", "300.1.1.1");
        check("172.x.x.196", "172.x.x.196");
    }

    #[test]
    fn ipv6_is_masked() {
        check("from fe80::1ff:fe23:4567:890a here", "from fe80:x::x here");
        check("2001:db8:85a3:0:0:8a2e:370:7334", "2001:x::x");
        check("[::1]:80", "[x::x]:80");
        check("at 12:34:56 ok", "at 12:34:56 ok");
        check("std::vector and Foo::Bar", "std::vector and Foo::Bar");
    }

    #[test]
    fn mac_and_email_are_masked() {
        check("hwaddr 00:1A:2b:3c:4D:5e up", "hwaddr xx:xx:xx:xx:xx:xx up");
        check("hwaddr 00-1a-2b-3c-4d-5e", "hwaddr xx:xx:xx:xx:xx:xx");
        check("mail admin@example.com now", "mail x@x.x now");
        check("npm WARN inflight@1.0.6", "npm WARN inflight@1.0.6");
    }

    #[test]
    fn clean_text_is_not_copied() {
        assert!(matches!(mask("nothing here 1.2.3"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_logs_keep_the_first_line_and_the_end() {
        let log = format!(
            "exit_code=100 | APT error\n{}THE END",
            "é line\n".repeat(30_000)
        );
        let cut = cut_log(&log, MAX_ERROR_BYTES);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.starts_with("exit_code=100 | APT error\n[... "));
        assert!(cut.ends_with("THE END"));
        assert!(cut.contains(" bytes cut ...]"));
        assert_eq!(cut_log("short", 10), "short");
    }

    #[test]
    fn cuts_land_on_character_boundaries() {
        assert_eq!(cut_at_char("ééé", 3), "é");
        assert_eq!(cut_at_char("abc", 3), "abc");
        let euros = "€".repeat(1000);
        let cut = cut_log(&euros, 100);
        assert!(cut.len() <= 100);
    }
}
