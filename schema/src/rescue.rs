//! The rescue pass of contract §4: turns a body that real scripts send into a JSON object, repairing the
//! known script bugs on the way and recording which repairs it made. A body that is valid JSON is parsed
//! as is; only a body that fails is repaired and parsed again.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::event::RescueKind;

/// Objects and arrays nested deeper than this are rejected (never a stack overflow).
pub const MAX_DEPTH: usize = 32;

/// Why a body is not a JSON object, even after repairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset of the problem in the (repaired) body.
    pub offset: usize,
    pub reason: String,
}

/// A body parsed into its top-level object, with the repairs that made it parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub object: Map<String, Value>,
    pub rescued: Vec<RescueKind>,
}

/// A body parsed into the pairs of its top-level object, in the order sent (a key sent twice is there
/// twice), with the repairs that made it parse. Keys are borrowed from a body that parsed as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedPairs<'a> {
    pub pairs: Vec<(Cow<'a, str>, Value)>,
    pub rescued: Vec<RescueKind>,
}

/// Parses a request body into a JSON object, repairing known script bugs when the plain parse fails.
pub fn parse(body: &[u8]) -> Result<Parsed, JsonError> {
    let first_error = match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            return into_object(value, 0).map(|object| Parsed {
                object,
                rescued: Vec::new(),
            })
        }
        Err(e) => e,
    };
    let (repaired, rescued) = rescue(body, &first_error)?;
    match serde_json::from_str::<Value>(&repaired) {
        Ok(value) => into_object(value, repaired.len()).map(|object| Parsed { object, rescued }),
        Err(e) => Err(json_error(&repaired, &e)),
    }
}

/// [`parse`] without building the object: the top-level pairs as sent, with no map and no hashing of
/// keys, for a reader that looks at each field once. Same repairs, same errors.
pub fn parse_pairs(body: &[u8]) -> Result<ParsedPairs<'_>, JsonError> {
    let first_error = match serde_json::from_slice::<Top>(body) {
        Ok(top) => {
            return top.into_pairs(0).map(|pairs| ParsedPairs {
                pairs,
                rescued: Vec::new(),
            })
        }
        Err(e) => e,
    };
    let (repaired, rescued) = rescue(body, &first_error)?;
    match serde_json::from_str::<Top>(&repaired) {
        Ok(top) => top.into_pairs(repaired.len()).map(|pairs| ParsedPairs {
            pairs: pairs
                .into_iter()
                .map(|(key, value)| (Cow::Owned(key.into_owned()), value))
                .collect(),
            rescued,
        }),
        Err(e) => Err(json_error(&repaired, &e)),
    }
}

/// The repaired text of a body whose plain parse failed with `first_error`, and the repairs made
/// (sorted, once each); the plain parse's error when there was nothing to repair.
fn rescue(
    body: &[u8],
    first_error: &serde_json::Error,
) -> Result<(String, Vec<RescueKind>), JsonError> {
    let mut rescued = Vec::new();
    let text = String::from_utf8_lossy(body);
    if matches!(text, Cow::Owned(_)) {
        rescued.push(RescueKind::InvalidUtf8);
    }
    let repaired = repair(&text, &mut rescued)?;
    if rescued.is_empty() {
        return Err(json_error(&text, first_error));
    }
    rescued.sort();
    rescued.dedup();
    Ok((repaired, rescued))
}

/// A parsed body's top level: the pairs of an object, or any other JSON value (then only its depth is
/// kept, for the same error as [`parse`]'s).
enum Top<'a> {
    Object(Vec<(Cow<'a, str>, Value)>),
    Other(Value),
}

impl<'a> Top<'a> {
    fn into_pairs(self, len: usize) -> Result<Vec<(Cow<'a, str>, Value)>, JsonError> {
        match self {
            Top::Object(pairs) => {
                // As in the object: a value replaced by a later one of its key does not count.
                let kept = |i: usize| !pairs[i + 1..].iter().any(|(k, _)| *k == pairs[i].0);
                let too_deep_at = |i: usize| 1 + depth(&pairs[i].1) > MAX_DEPTH;
                if (0..pairs.len()).any(|i| too_deep_at(i) && kept(i)) {
                    return Err(too_deep());
                }
                Ok(pairs)
            }
            Top::Other(value) => into_object(value, len).map(|_| Vec::new()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Top<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Top<'de>, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(32));
                while let Some(Key(key)) = map.next_key()? {
                    pairs.push((key, map.next_value()?));
                }
                Ok(Top::Object(pairs))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Top<'de>, A::Error> {
                let value = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Top::Other(value))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Top<'de>, E> {
                Ok(Top::Other(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Top<'de>, E> {
                Ok(Top::Other(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Top<'de>, E> {
                Ok(Top::Other(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Top<'de>, E> {
                Ok(Top::Other(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Top<'de>, E> {
                Ok(Top::Other(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Top<'de>, E> {
                Ok(Top::Other(Value::Null))
            }
        }
        use serde::Deserialize;
        deserializer.deserialize_any(Visitor)
    }
}

/// A key of the top-level object, borrowed from the body when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn too_deep() -> JsonError {
    JsonError {
        offset: 0,
        reason: format!("nesting is deeper than {MAX_DEPTH} levels"),
    }
}

fn into_object(value: Value, len: usize) -> Result<Map<String, Value>, JsonError> {
    if depth(&value) > MAX_DEPTH {
        return Err(too_deep());
    }
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(JsonError {
            offset: len.min(1).saturating_sub(1),
            reason: "the body must be a JSON object".into(),
        }),
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn json_error(text: &str, error: &serde_json::Error) -> JsonError {
    JsonError {
        offset: byte_offset(text, error.line(), error.column()),
        reason: error.to_string(),
    }
}

/// serde_json reports 1-based line and column; turn them into a byte offset.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// One pass over the text that fixes what scripts are known to break. It tracks whether it is inside a
/// string and how deep it is; everything else is copied.
fn repair(text: &str, rescued: &mut Vec<RescueKind>) -> Result<String, JsonError> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => {
                    if bytes.get(i + 1) == Some(&b'x') && is_hex(bytes, i + 2, 2) {
                        out.push_str("\\u00");
                        out.push_str(&text[i + 2..i + 4]);
                        rescued.push(RescueKind::HexEscape);
                        i += 4;
                        continue;
                    }
                    out.push('\\');
                    // Copy the escaped character whole (it may be multi-byte).
                    match text[i + 1..].chars().next() {
                        Some(ch) if (ch as u32) < 0x20 => {
                            push_control(&mut out, ch);
                            rescued.push(RescueKind::ControlChars);
                            i += 2;
                        }
                        Some(ch) => {
                            out.push(ch);
                            i += 1 + ch.len_utf8();
                        }
                        None => i += 1,
                    }
                    continue;
                }
                b'"' => {
                    if closes_string(bytes, i + 1) {
                        in_string = false;
                        out.push('"');
                    } else {
                        out.push_str("\\\"");
                        rescued.push(RescueKind::UnescapedQuote);
                    }
                }
                0x00..=0x1f => {
                    push_control(&mut out, b as char);
                    rescued.push(RescueKind::ControlChars);
                }
                _ => {
                    let ch = text[i..].chars().next().unwrap_or('\u{FFFD}');
                    out.push(ch);
                    i += ch.len_utf8();
                    continue;
                }
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push('"');
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(JsonError {
                        offset: i,
                        reason: format!("nesting is deeper than {MAX_DEPTH} levels"),
                    });
                }
                out.push(b as char);
            }
            b'}' | b']' | b',' => {
                if last_significant(&out) == Some(b':') {
                    out.push_str("null");
                    rescued.push(RescueKind::EmptyValue);
                }
                out.push(b as char);
                if b != b',' {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        if !text[i + 1..].trim().is_empty() {
                            rescued.push(RescueKind::TrailingData);
                        }
                        return Ok(out);
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let end = number_end(bytes, i);
                out.push_str(&text[i..end]);
                let suffix_end = bytes[end..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphabetic() || *c == b'%'))
                    .map_or(bytes.len(), |p| end + p);
                if suffix_end > end
                    && ends_value(bytes, suffix_end)
                    && bytes[end - 1].is_ascii_digit()
                {
                    rescued.push(RescueKind::UnitSuffix);
                    i = suffix_end;
                } else {
                    i = end;
                }
                continue;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('\u{FFFD}');
                out.push(ch);
                i += ch.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    Ok(out)
}

fn is_hex(bytes: &[u8], from: usize, n: usize) -> bool {
    bytes
        .get(from..from + n)
        .is_some_and(|s| s.iter().all(u8::is_ascii_hexdigit))
}

fn push_control(out: &mut String, ch: char) {
    match ch {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        _ => out.push_str(&format!("\\u{:04x}", ch as u32)),
    }
}

/// A quote closes a string when what follows it (after blanks) is structure or the end of the body.
fn closes_string(bytes: &[u8], from: usize) -> bool {
    match bytes[from..].iter().find(|b| !b.is_ascii_whitespace()) {
        None => true,
        Some(b) => matches!(b, b',' | b'}' | b']' | b':'),
    }
}

/// A value ends at blanks, a comma, or the end of an object or array.
fn ends_value(bytes: &[u8], at: usize) -> bool {
    match bytes.get(at) {
        None => true,
        Some(b) => b.is_ascii_whitespace() || matches!(b, b',' | b'}' | b']'),
    }
}

fn last_significant(out: &str) -> Option<u8> {
    out.bytes().rev().find(|b| !b.is_ascii_whitespace())
}

/// End of a JSON number token starting at `start` (sign, digits, fraction, exponent).
fn number_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected`: Ok(rescue kinds) with the given field values, or Err(()) for a rejection.
    fn check(body: &[u8], expected: Result<&[RescueKind], ()>) -> Option<Map<String, Value>> {
        let got = parse(body);
        match (&got, expected) {
            (Ok(p), Ok(kinds)) => {
                assert_eq!(p.rescued, kinds, "body {:?}", String::from_utf8_lossy(body));
                Some(p.object.clone())
            }
            (Err(_), Err(())) => None,
            _ => panic!(
                "body {:?}: got {got:?}, expected {expected:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }

    #[test]
    fn valid_json_is_not_rescued() {
        let o = check(br#"{"a": 1, "b": "x"}"#, Ok(&[])).unwrap();
        assert_eq!(o["a"], 1);
    }

    #[test]
    fn empty_values_become_null() {
        let o = check(b"{\"a\": , \"b\": 2}", Ok(&[RescueKind::EmptyValue])).unwrap();
        assert!(o["a"].is_null());
        assert_eq!(o["b"], 2);
        let o = check(b"{\"b\": 2, \"a\":   }", Ok(&[RescueKind::EmptyValue])).unwrap();
        assert!(o["a"].is_null());
    }

    #[test]
    fn unit_suffixes_are_dropped() {
        let o = check(
            b"{\"disk_size\": 32G, \"ram\": 4096MB}",
            Ok(&[RescueKind::UnitSuffix]),
        )
        .unwrap();
        assert_eq!(o["disk_size"], 32);
        assert_eq!(o["ram"], 4096);
        // Literals and exponents are not suffixes.
        let o = check(
            b"{\"a\": true, \"b\": 1e3, \"c\": 5G}",
            Ok(&[RescueKind::UnitSuffix]),
        )
        .unwrap();
        assert_eq!(o["a"], true);
        // A suffix glued to more text is not a unit: stays broken.
        check(b"{\"a\": 5Gx\"}", Err(()));
    }

    #[test]
    fn raw_control_characters_are_escaped() {
        let o = check(
            b"{\"e\": \"a\nb\tc\x1bd\"}",
            Ok(&[RescueKind::ControlChars]),
        )
        .unwrap();
        assert_eq!(o["e"], "a\nb\tc\u{1b}d");
    }

    #[test]
    fn hex_escapes_become_code_points() {
        let o = check(br#"{"e": "caf\xe9 \x41"}"#, Ok(&[RescueKind::HexEscape])).unwrap();
        assert_eq!(o["e"], "caf\u{e9} A");
        // A broken \x escape is still an invalid escape.
        check(br#"{"e": "\xZZ"}"#, Err(()));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let o = check(
            b"{\"e\": \"F\xe9hler \xff\"}",
            Ok(&[RescueKind::InvalidUtf8]),
        )
        .unwrap();
        assert_eq!(o["e"], "F\u{FFFD}hler \u{FFFD}");
    }

    #[test]
    fn trailing_data_is_ignored() {
        let o = check(b"{\"a\": 1}\n{\"a\": 2}", Ok(&[RescueKind::TrailingData])).unwrap();
        assert_eq!(o["a"], 1);
        let o = check(b"{\"a\": 1}garbage", Ok(&[RescueKind::TrailingData])).unwrap();
        assert_eq!(o["a"], 1);
    }

    #[test]
    fn unescaped_quotes_inside_strings_are_escaped() {
        let body = br#"{"error": "Unable to locate package "python3-pip" now", "b": 1}"#;
        let o = check(body, Ok(&[RescueKind::UnescapedQuote])).unwrap();
        assert_eq!(o["error"], "Unable to locate package \"python3-pip\" now");
        assert_eq!(o["b"], 1);
    }

    #[test]
    fn several_repairs_are_all_recorded() {
        let body = b"{\"a\": , \"d\": 8G, \"e\": \"x\ny\"}";
        check(
            body,
            Ok(&[
                RescueKind::EmptyValue,
                RescueKind::UnitSuffix,
                RescueKind::ControlChars,
            ]),
        );
    }

    #[test]
    fn what_still_does_not_parse_is_rejected() {
        check(b"", Err(()));
        check(b"not json", Err(()));
        check(b"{\"a\": \"cut mid-str", Err(()));
        check(b"{\"a\": 1", Err(()));
        check(b"[1, 2]", Err(()));
        check(b"\"just a string\"", Err(()));
        check(b"{\"a\": \"x\"", Err(()));
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflow() {
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(30), "]".repeat(30));
        check(ok.as_bytes(), Ok(&[]));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        check(deep.as_bytes(), Err(()));
        // Deeper than serde_json's own limit, and broken, so the repair pass sees it.
        let very_deep = format!("{{\"a\":{}", "[".repeat(100_000));
        check(very_deep.as_bytes(), Err(()));
        let very_deep_broken = format!("{{\"a\":{}\x01", "{\"b\":".repeat(100_000));
        check(very_deep_broken.as_bytes(), Err(()));
    }

    #[test]
    fn offsets_point_at_the_problem() {
        let err = parse(b"{\"a\": 1,\n \"b\": x}").unwrap_err();
        assert_eq!(err.offset, 15, "{err:?}");
    }
}
