//! Fuzzing of the edge's decision on a request body (`ingest::http::judge_body`: the body limit, then the
//! schema's rescue pass and validation), with inputs grown from the payload corpus. Each input is a corpus
//! body put through a few mutations: byte flips, insertions, deletions, truncation, repeats, splices of two
//! bodies, and JSON-aware ones that set a field to an edge value (huge, negative and fractional numbers,
//! unit suffixes, empty strings, control characters, `\xNN` escapes, invalid UTF-8, unescaped quotes,
//! nesting past the depth limit, long strings, duplicate keys, wrong types) or resize the body to a few
//! bytes around the limit.
//!
//! Every input must get, without a panic, exactly one of the answers 202, 400 or 413, with the JSON the
//! edge sends. An accepted event keeps the field rules, masks the addresses planted in its log, and has a
//! wire form that reads back equal and validates again to the same event. A rejection names a field or the
//! body, and a body that is plain JSON is never `invalid_json`.
//!
//! `FUZZ_CASES` sets the number of inputs (a CI-sized run by default) and `FUZZ_SEED` (64 hex digits) the
//! random seed, which every run prints; `deploy/fuzz/run` runs the long campaign in release. A failing input
//! is shrunk, its body written to `schema/fixtures/fuzz/`, and every body there is replayed on each run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use clap::Parser;
use ingest::http::{judge_body, ApiError};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use schema::event::SCHEMA_VERSION;
use schema::privacy::MAX_ERROR_BYTES;
use schema::validate::{
    MAX_ID_LEN, MAX_MODEL_BYTES, MAX_NSAPP_BYTES, MAX_RAM_SPEED_BYTES, MAX_SHORT_BYTES,
};
use schema::{Accepted, Event, Reception, RescueKind, Status};
use serde_json::Value;

/// Inputs of a run inside the normal test suite: 200 to 330 inputs/s in a debug build here, where an
/// input with a 100 KB log takes some 10 ms, so 20 to 30 s (the release campaign checks ~3000 inputs/s).
const CI_CASES: u32 = 6_000;
/// The broker's `max_payload` (deploy/nats/nats.conf): a wire form larger than this could never publish.
const MAX_WIRE_BYTES: usize = 1024 * 1024;
/// What `schema::privacy::cut_log` puts where it cut a log.
const CUT_MARKER: &str = " bytes cut ...]\n";
/// Fields the contract names; a rejection may only name one of these.
const CONTRACT_FIELDS: &[&str] = &[
    "random_id",
    "execution_id",
    "type",
    "nsapp",
    "status",
    "ct_type",
    "disk_size",
    "core_count",
    "ram_size",
    "os_type",
    "os_version",
    "pve_version",
    "method",
    "exit_code",
    "error",
    "error_category",
    "install_duration",
    "duration",
    "cpu_vendor",
    "cpu_model",
    "gpu_vendor",
    "gpu_model",
    "gpu_passthrough",
    "ram_speed",
    "repo_source",
    "repo_slug",
    "has_arm",
    "arch",
];
/// Fields without which an event is rejected as `missing_field`.
const REQUIRED_FIELDS: &[&str] = &["random_id", "type", "nsapp", "status"];
/// Addresses planted in logs; none may survive into an accepted `error`.
const SECRETS: &[&str] = &[
    "10.20.30.40",
    "root@example.org",
    "02:42:ac:11:00:02",
    "fe80::1ff:fe23:4567:890a",
    "::ffff:172.16.9.8",
];

// ---------------------------------------------------------------------------------------------------
// Inputs

/// One mutation of a body. Positions are `Index`es, mapped onto the body's length when applied.
#[derive(Debug, Clone)]
enum Op {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, &'static [u8]),
    Delete(Index, usize),
    Truncate(Index),
    /// The head of this body up to `at`, then the tail of another corpus body from `from`.
    Splice {
        other: Index,
        at: Index,
        from: Index,
    },
    Repeat {
        at: Index,
        len: usize,
        times: usize,
    },
    /// Replaces the value of the first `"key":` (or adds the field when there is none).
    SetField(&'static str, Edge),
    /// Adds `"key": value` as the first member (an earlier duplicate loses) or the last (it wins).
    AddField(&'static str, Edge, bool),
    /// Makes the body `limit + delta` bytes long.
    Resize(i64, Pad),
}

/// A value written into a field.
#[derive(Debug, Clone)]
enum Edge {
    /// Raw JSON text (or text that is almost JSON).
    Raw(&'static [u8]),
    /// Bytes put between quotes as they are (raw quotes, control bytes and invalid UTF-8 included).
    Quoted(&'static [u8]),
    Int(i64),
    Float(f64),
    /// A quoted string of `len` bytes made of `fill` repeated.
    Long {
        len: usize,
        fill: &'static [u8],
    },
    /// `depth` levels of arrays or objects around a number, closed or cut off.
    Nested {
        depth: usize,
        objects: bool,
        closed: bool,
    },
    /// A log with addresses in its first line and at its end, and `lines` lines of filler between, the
    /// line breaks escaped or raw.
    Canary {
        which: usize,
        lines: usize,
        raw_newlines: bool,
    },
}

/// How `Resize` grows a body.
#[derive(Debug, Clone, Copy)]
enum Pad {
    /// Blanks after the object.
    Trailing,
    /// A long `error` as the last member (so it wins over an earlier one).
    Error,
    /// A long unknown field as the first member.
    Unknown,
}

#[derive(Debug, Clone)]
struct Input {
    seed: Index,
    ops: Vec<Op>,
}

const KEYS: &[&str] = &[
    "random_id",
    "execution_id",
    "type",
    "nsapp",
    "status",
    "ct_type",
    "disk_size",
    "core_count",
    "ram_size",
    "os_type",
    "os_version",
    "pve_version",
    "method",
    "exit_code",
    "error",
    "error",
    "error_category",
    "install_duration",
    "duration",
    "cpu_vendor",
    "cpu_model",
    "gpu_vendor",
    "gpu_model",
    "gpu_passthrough",
    "ram_speed",
    "repo_source",
    "unknown_field",
    "",
    "Status",
];

const RAW_VALUES: &[&[u8]] = &[
    b"0",
    b"-0",
    b"-1",
    b"1",
    b"2",
    b"3",
    b"129",
    b"130",
    b"255",
    b"256",
    b"65535",
    b"86400",
    b"86401",
    b"100000",
    b"100001",
    b"1048576",
    b"1048577",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551615",
    b"18446744073709551616",
    b"123456789012345678901234567890",
    b"1e400",
    b"-1e400",
    b"1e308",
    b"1.5",
    b"8.0",
    b"-0.0",
    b"2.0e2",
    b"1E3",
    b"1e-7",
    b"8G",
    b"32G",
    b"4096MB",
    b"10%",
    b"8 G",
    b"8Gx",
    b"1e",
    b"1.",
    b"-",
    b"--1",
    b"+1",
    b"0x10",
    b"01",
    b"NaN",
    b"Infinity",
    b"true",
    b"false",
    b"null",
    b"nul",
    b"[]",
    b"{}",
    b"[1,2]",
    b"[\"a\"]",
    b"{\"a\":1}",
    b"",
    b" ",
    b",",
    b"}",
    b"]",
    b":",
    b"\"",
    b"\"\"",
    b"\"\\",
    b"'x'",
];

const QUOTED_VALUES: &[&[u8]] = &[
    b"",
    b" ",
    b"8",
    b" 8 ",
    b"-1",
    b"1e3",
    b"8.0",
    b"8G",
    b"99999999999999999999",
    b"\\u0000",
    b"\\u001f",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"\\uD83D\\uDE00",
    b"\\x41",
    b"\\xe9t\\xE9",
    b"\\xZZ",
    b"\\x4",
    b"\\q",
    b"\\",
    b"\\\"",
    b"a\"b",
    b"a\" , \"b",
    b"say \"hi\": now",
    b"\t",
    b"a\x01b",
    b"\x00",
    b"\x7f",
    b"line\r\nnext",
    b"\xff\xfe",
    b"\xc3",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x80\xa8",
    b"\xc4\xb0STANBUL",
    b"\xe2\x80\x8b",
    b"LXC",
    b" vm ",
    b"tool",
    b"pve",
    b"addon",
    b"installing",
    b"validation",
    b"configuring",
    b"sucess",
    b"done",
    b"SUCCESS",
    b"failed",
    b"aborted",
    b"unknown",
    b"weird",
    b"ProxmoxVE",
    b"proxmoxved",
    b"external",
    b"user_aborted",
    b"dependency",
    b" Network ",
    b"nvidia",
    b"igpu",
    b"homeassistant",
    b"opnsense",
    b"Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz",
    b"abc.DEF_1:2-3",
    b"-abc",
    b"a b",
    b"exit_code=130 | Aborted by user (SIGINT)",
    b"Ctrl+C pressed",
    b"KeyboardInterrupt",
    b"exit_code=100 | E: Unable to locate package \"python3-pip\"",
];

const INSERTS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\x",
    b"\\xe9",
    b"\\u00",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b", ,",
    b": ,",
    b"null",
    b"8G",
    b"1e999",
    b"-",
    b"\n",
    b"\r",
    b"\x00",
    b"\x1b[31m",
    b"\x7f",
    b"\xc3",
    b"\xe9",
    b"\xff",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\"a\":1,",
    b"\"status\":\"failed\",",
    b"\"exit_code\":0,",
    b"\"exit_code\":130,",
    b"}{\"a\":1}",
    b"garbage",
    b" 10.20.30.40 ",
];

const BYTES: &[u8] = &[
    b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b' ', b'0', b'9', b'-', b'.', b'e', b'x',
    b'G', 0x00, 0x09, 0x0a, 0x1f, 0x7f, 0x80, 0xbf, 0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff,
];

const FILLS: &[&[u8]] = &[
    b"a",
    b" ",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"\\n",
    b"\\\"",
    b"\\u00e9",
    b"\x01",
    b"\xff",
    b"1.2.3.4 ",
    b"-10.1.2.3 ",
    b"\"",
];

const LENGTHS: &[usize] = &[
    0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 512, 1023, 1024, 1025, 16_384, 131_071, 131_072,
    131_073, 200_000, 262_144,
];

fn edge() -> impl Strategy<Value = Edge> {
    prop_oneof![
        6 => select(RAW_VALUES).prop_map(Edge::Raw),
        6 => select(QUOTED_VALUES).prop_map(Edge::Quoted),
        2 => any::<i64>().prop_map(Edge::Int),
        1 => any::<f64>().prop_map(Edge::Float),
        2 => (select(LENGTHS), select(FILLS)).prop_map(|(len, fill)| Edge::Long { len, fill }),
        2 => (
            prop_oneof![select(&[1usize, 31, 32, 33, 127, 128, 129][..]), 1..100_000usize],
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(depth, objects, closed)| Edge::Nested { depth, objects, closed }),
        2 => (0..=SECRETS.len(), select(&[0usize, 3, 1_000, 4_090, 4_100, 6_000][..]), any::<bool>())
            .prop_map(|(which, lines, raw_newlines)| Edge::Canary { which, lines, raw_newlines }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Op::FlipBit(at, bit)),
        2 => (any::<Index>(), select(BYTES)).prop_map(|(at, b)| Op::SetByte(at, b)),
        3 => (any::<Index>(), select(INSERTS)).prop_map(|(at, s)| Op::Insert(at, s)),
        2 => (any::<Index>(), 1..64usize).prop_map(|(at, n)| Op::Delete(at, n)),
        1 => any::<Index>().prop_map(Op::Truncate),
        2 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(other, at, from)| Op::Splice { other, at, from }),
        1 => (any::<Index>(), 1..256usize, 2..64usize)
            .prop_map(|(at, len, times)| Op::Repeat { at, len, times }),
        8 => (select(KEYS), edge()).prop_map(|(k, v)| Op::SetField(k, v)),
        2 => (select(KEYS), edge(), any::<bool>()).prop_map(|(k, v, last)| Op::AddField(k, v, last)),
        1 => (
            prop_oneof![-4i64..=4, -300i64..300],
            select(&[Pad::Trailing, Pad::Error, Pad::Unknown][..])
        )
            .prop_map(|(d, p)| Op::Resize(d, p)),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    (any::<Index>(), prop::collection::vec(op(), 0..6)).prop_map(|(seed, ops)| Input { seed, ops })
}

/// Where an `Index` lands in a body of `len` bytes (0..=len).
fn at(index: &Index, len: usize) -> usize {
    index.index(len + 1)
}

impl Edge {
    fn render(&self) -> Vec<u8> {
        match self {
            Edge::Raw(raw) => raw.to_vec(),
            Edge::Quoted(text) => [b"\"", *text, b"\""].concat(),
            Edge::Int(n) => n.to_string().into_bytes(),
            Edge::Float(f) => format!("{f:?}").into_bytes(),
            Edge::Long { len, fill } => {
                let mut out = Vec::with_capacity(len + 2);
                out.push(b'"');
                out.extend_from_slice(&fill.repeat(len / fill.len() + 1)[..*len]);
                out.push(b'"');
                out
            }
            Edge::Nested {
                depth,
                objects,
                closed,
            } => {
                let (open, close): (&[u8], &[u8]) = if *objects {
                    (b"{\"a\":", b"}")
                } else {
                    (b"[", b"]")
                };
                let mut out = open.repeat(*depth);
                out.push(b'1');
                if *closed {
                    out.extend(close.repeat(*depth));
                }
                out
            }
            Edge::Canary {
                which,
                lines,
                raw_newlines,
            } => {
                let secrets = match SECRETS.get(*which) {
                    Some(one) => one.to_string(),
                    None => SECRETS.join(" | "),
                };
                let newline: &str = if *raw_newlines { "\n" } else { "\\n" };
                let mut log = format!("exit_code=1 | cannot reach {secrets} now");
                for i in 0..*lines {
                    log.push_str(newline);
                    log.push_str(&format!("Get:{i} http://deb.debian.org trixie InRelease"));
                }
                log.push_str(newline);
                log.push_str(&format!("last words: {secrets} ;"));
                format!("\"{log}\"").into_bytes()
            }
        }
    }
}

/// The extent of the value after `"key":`, or the end of the key when it has no `:`.
fn find_value(body: &[u8], key: &str) -> Option<(usize, usize)> {
    let needle = format!("\"{key}\"");
    let start = body
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    let mut i = start + needle.len();
    while body.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if body.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while body.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let from = i;
    match body.get(i) {
        Some(b'"') => {
            i += 1;
            while i < body.len() {
                match body[i] {
                    b'\\' => i += 2,
                    b'"' => return Some((from, i + 1)),
                    _ => i += 1,
                }
            }
            Some((from, body.len()))
        }
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            while i < body.len() {
                match body[i] {
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some((from, i + 1));
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Some((from, body.len()))
        }
        _ => {
            while i < body.len() && !matches!(body[i], b',' | b'}' | b']' | b'\n') {
                i += 1;
            }
            Some((from, i))
        }
    }
}

/// `Vec::splice` with slices (plain copies, fast in a debug build too).
fn replace(body: &mut Vec<u8>, range: std::ops::Range<usize>, with: &[u8]) {
    let tail = body.split_off(range.end);
    body.truncate(range.start);
    body.extend_from_slice(with);
    body.extend_from_slice(&tail);
}

fn add_field(body: &mut Vec<u8>, key: &str, value: &[u8], last: bool) {
    let member = [format!("\"{key}\":").as_bytes(), value].concat();
    if last {
        let close = body.iter().rposition(|&b| b == b'}').unwrap_or(body.len());
        let mut insert = b",".to_vec();
        insert.extend(member);
        replace(body, close..close, &insert);
    } else {
        let open = body.iter().position(|&b| b == b'{').map_or(0, |p| p + 1);
        let mut insert = member;
        insert.push(b',');
        replace(body, open..open, &insert);
    }
}

impl Input {
    /// The body this input stands for, and whether it ends with a log full of planted addresses.
    fn body(&self, corpus: &[Vec<u8>], limit: usize) -> (Vec<u8>, bool) {
        let mut body = corpus[self.seed.index(corpus.len())].clone();
        let mut canary = false;
        for op in &self.ops {
            canary = false;
            let len = body.len();
            match op {
                Op::FlipBit(i, bit) => {
                    if len > 0 {
                        body[i.index(len)] ^= 1 << bit;
                    }
                }
                Op::SetByte(i, b) => {
                    if len > 0 {
                        body[i.index(len)] = *b;
                    }
                }
                Op::Insert(i, bytes) => {
                    let p = at(i, len);
                    replace(&mut body, p..p, bytes);
                }
                Op::Delete(i, n) => {
                    let p = at(i, len);
                    body.drain(p..(p + n).min(len));
                }
                Op::Truncate(i) => body.truncate(at(i, len)),
                Op::Splice { other, at: a, from } => {
                    let other = &corpus[other.index(corpus.len())];
                    body.truncate(at(a, len));
                    body.extend_from_slice(&other[at(from, other.len())..]);
                }
                Op::Repeat {
                    at: a,
                    len: n,
                    times,
                } => {
                    let p = at(a, len);
                    let chunk = body[p..(p + n).min(len)].to_vec();
                    let repeated = chunk.repeat(*times);
                    replace(&mut body, p..p, &repeated);
                }
                Op::SetField(key, value) => {
                    let rendered = value.render();
                    match find_value(&body, key) {
                        Some((from, to)) => replace(&mut body, from..to, &rendered),
                        None => add_field(&mut body, key, &rendered, true),
                    }
                    canary = *key == "error" && matches!(value, Edge::Canary { .. });
                }
                Op::AddField(key, value, last) => {
                    add_field(&mut body, key, &value.render(), *last);
                    canary = *last && *key == "error" && matches!(value, Edge::Canary { .. });
                }
                Op::Resize(delta, pad) => {
                    let target = (limit as i64 + delta).max(0) as usize;
                    resize(&mut body, target, *pad);
                }
            }
        }
        (body, canary)
    }
}

/// Grows (or cuts) `body` to exactly `target` bytes.
fn resize(body: &mut Vec<u8>, target: usize, pad: Pad) {
    let grow = target.saturating_sub(body.len());
    let (key, last) = match pad {
        Pad::Trailing => ("", false),
        Pad::Error => ("error", true),
        Pad::Unknown => ("padding", false),
    };
    // `"key":""` plus the comma.
    let overhead = key.len() + 6;
    if matches!(pad, Pad::Trailing) || grow < overhead {
        body.resize(target, b' ');
        return;
    }
    let filler = vec![b'a'; grow - overhead];
    add_field(body, key, &[b"\"", &filler[..], b"\""].concat(), last);
    body.resize(target, b' ');
}

// ---------------------------------------------------------------------------------------------------
// The check of one body

/// What the edge answered, for the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accepted,
    Rejected,
    TooLarge,
}

/// Counts over a run, printed at its end.
#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    rejected: AtomicU64,
    too_large: AtomicU64,
    invalid_json: AtomicU64,
    invalid_field: AtomicU64,
    missing_field: AtomicU64,
    rescued: [AtomicU64; RescueKind::ALL.len()],
    logs_cut: AtomicU64,
    canaries: AtomicU64,
}

impl Tally {
    fn count(&self, answer: Answer) {
        let counter = match answer {
            Answer::Accepted => &self.accepted,
            Answer::Rejected => &self.rejected,
            Answer::TooLarge => &self.too_large,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        [&self.accepted, &self.rejected, &self.too_large]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn print(&self, seed: &str, cases: u32, took: std::time::Duration) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let total = self.total();
        println!("fuzz: seed {seed}");
        println!(
            "fuzz: {total} inputs checked ({cases} generated cases) in {:.1} s, {:.0} inputs/s",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64().max(1e-9)
        );
        println!(
            "fuzz: 202 accepted {}, 400 rejected {}, 413 too large {}",
            get(&self.accepted),
            get(&self.rejected),
            get(&self.too_large)
        );
        println!(
            "fuzz: 400 by code: invalid_json {}, invalid_field {}, missing_field {}",
            get(&self.invalid_json),
            get(&self.invalid_field),
            get(&self.missing_field)
        );
        let rescued: Vec<String> = RescueKind::ALL
            .iter()
            .zip(&self.rescued)
            .map(|(k, c)| format!("{} {}", k.as_str(), get(c)))
            .collect();
        println!(
            "fuzz: accepted with repairs: {}; logs cut {}; planted-address logs accepted {}",
            rescued.join(", "),
            get(&self.logs_cut),
            get(&self.canaries)
        );
    }
}

fn reception() -> Reception {
    Reception {
        event_id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        received_at: time::OffsetDateTime::from_unix_timestamp(1_750_000_000).expect("timestamp"),
    }
}

/// The body limit the edge runs with by default.
fn default_limit() -> usize {
    ingest::Config::try_parse_from(["telemetry-ingest"])
        .expect("default config")
        .max_body_bytes
}

/// Depth of nested arrays and objects, counted as the rescue pass does.
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// True when the body is a JSON object that needs no repair.
fn plain_json_object(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v.is_object() && depth(&v) <= schema::rescue::MAX_DEPTH)
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Sends one body through the edge's decision and checks the answer; `Err` says what is wrong.
fn check(
    body: &[u8],
    limit: usize,
    canary: bool,
    runtime: &tokio::runtime::Runtime,
    tally: &Tally,
) -> Result<Answer, String> {
    let decision = std::panic::catch_unwind(|| judge_body(body, limit, reception()))
        .map_err(|panic| format!("judge_body panicked: {}", panic_text(&panic)))?;
    let answer = match decision {
        Ok(accepted) => {
            ensure!(
                body.len() <= limit,
                "accepted a body of {} bytes over the limit {limit}",
                body.len()
            );
            check_accepted(&accepted, body, canary, tally)?;
            Answer::Accepted
        }
        Err(error) => {
            let too_large = matches!(error, ApiError::TooLarge(_));
            let response = error.into_response();
            let status = response.status();
            let bytes = runtime
                .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                .map_err(|e| format!("error body unreadable: {e}"))?;
            let json: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("error body is not JSON ({e}): {bytes:?}"))?;
            let code = json["error"].as_str().unwrap_or_default();
            let message = json["message"].as_str().unwrap_or_default();
            if too_large {
                ensure!(
                    status == StatusCode::PAYLOAD_TOO_LARGE,
                    "too large answered {status}"
                );
                ensure!(code == "too_large", "413 with code {code:?}");
                ensure!(
                    body.len() > limit,
                    "413 for {} bytes under the limit {limit}",
                    body.len()
                );
                Answer::TooLarge
            } else {
                ensure!(
                    status == StatusCode::BAD_REQUEST,
                    "rejection answered {status}"
                );
                ensure!(
                    body.len() <= limit,
                    "400 instead of 413 for {} bytes",
                    body.len()
                );
                check_rejected(code, message, &json["field"], body)?;
                let counter = match code {
                    "invalid_json" => &tally.invalid_json,
                    "invalid_field" => &tally.invalid_field,
                    _ => &tally.missing_field,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Answer::Rejected
            }
        }
    };
    tally.count(answer);
    Ok(answer)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

fn check_rejected(code: &str, message: &str, field: &Value, body: &[u8]) -> Result<(), String> {
    match code {
        "invalid_json" => {
            ensure!(field.is_null(), "invalid_json names a field: {field}");
            ensure!(
                message.starts_with("the body "),
                "invalid_json does not name the body: {message:?}"
            );
            ensure!(
                !plain_json_object(body),
                "a plain JSON object was answered invalid_json: {message:?}"
            );
        }
        "invalid_field" | "missing_field" => {
            let field = field.as_str().unwrap_or_default();
            ensure!(
                CONTRACT_FIELDS.contains(&field),
                "{code} names no contract field: {field:?} ({message:?})"
            );
            ensure!(
                message.contains(field),
                "{code} message does not name {field}: {message:?}"
            );
            if code == "missing_field" {
                ensure!(
                    REQUIRED_FIELDS.contains(&field),
                    "missing_field for the optional {field}"
                );
            }
        }
        other => return Err(format!("unknown error code {other:?}: {message:?}")),
    }
    Ok(())
}

/// A short string field as validation leaves it: non-empty, trimmed, cut, without control characters.
fn check_text(name: &str, value: &Option<String>, max: usize) -> Result<(), String> {
    if let Some(s) = value {
        ensure!(!s.is_empty(), "{name} is empty instead of absent");
        ensure!(s.len() <= max, "{name} is {} bytes, over {max}", s.len());
        ensure!(s.trim() == s, "{name} is not trimmed: {s:?}");
        ensure!(
            !s.chars().any(char::is_control),
            "{name} keeps a control character: {s:?}"
        );
    }
    Ok(())
}

fn check_id(name: &str, id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    ensure!(
        !b.is_empty()
            && b.len() <= MAX_ID_LEN
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c)),
        "{name} breaks the id rule: {id:?}"
    );
    Ok(())
}

fn check_accepted(
    accepted: &Accepted,
    body: &[u8],
    canary: bool,
    tally: &Tally,
) -> Result<(), String> {
    let e = &accepted.event;
    ensure!(e.v == SCHEMA_VERSION, "v is {}", e.v);
    ensure!(
        e.event_id == reception().event_id && e.received_at == reception().received_at,
        "reception facts changed"
    );
    ensure!(!e.synthetic, "a client event is synthetic");
    check_id("random_id", &e.random_id)?;
    check_id("execution_id", &e.execution_id)?;
    ensure!(
        !e.nsapp.is_empty()
            && e.nsapp.len() <= MAX_NSAPP_BYTES
            && e.nsapp.trim() == e.nsapp
            && !e.nsapp.chars().any(char::is_control),
        "nsapp breaks its rule: {:?}",
        e.nsapp
    );
    ensure!(e.ct_type.is_none_or(|n| n <= 2), "ct_type {:?}", e.ct_type);
    ensure!(
        e.disk_size.is_none_or(|n| n <= 100_000),
        "disk_size {:?}",
        e.disk_size
    );
    ensure!(
        e.core_count.is_none_or(|n| n <= 256),
        "core_count {:?}",
        e.core_count
    );
    ensure!(
        e.ram_size.is_none_or(|n| n <= 1_048_576),
        "ram_size {:?}",
        e.ram_size
    );
    ensure!(
        e.install_duration.is_none_or(|n| n <= 86_400),
        "install_duration {:?}",
        e.install_duration
    );
    check_text("os_type", &e.os_type, MAX_SHORT_BYTES)?;
    ensure!(
        e.os_type
            .as_deref()
            .is_none_or(|s| !s.bytes().any(|b| b.is_ascii_uppercase())),
        "os_type not lower-cased: {:?}",
        e.os_type
    );
    check_text("os_version", &e.os_version, MAX_SHORT_BYTES)?;
    check_text("pve_version", &e.pve_version, MAX_SHORT_BYTES)?;
    check_text("method", &e.method, MAX_SHORT_BYTES)?;
    check_text("cpu_model", &e.cpu_model, MAX_MODEL_BYTES)?;
    check_text("gpu_model", &e.gpu_model, MAX_MODEL_BYTES)?;
    check_text("ram_speed", &e.ram_speed, MAX_RAM_SPEED_BYTES)?;

    // The log: present means non-empty, capped, and free of the addresses planted in it.
    if let Some(error) = &e.error {
        ensure!(!error.is_empty(), "error is empty instead of absent");
        ensure!(
            error.len() <= MAX_ERROR_BYTES,
            "error is {} bytes, over {MAX_ERROR_BYTES}",
            error.len()
        );
        if error.contains(CUT_MARKER) {
            tally.logs_cut.fetch_add(1, Ordering::Relaxed);
        }
    }
    if canary {
        tally.canaries.fetch_add(1, Ordering::Relaxed);
        let error = e.error.as_deref().unwrap_or_default();
        for secret in SECRETS {
            ensure!(!error.contains(secret), "{secret} left unmasked in error");
        }
    }

    // The reclassification of finals.
    if matches!(e.status, Status::Failed | Status::Unknown) {
        ensure!(
            !matches!(e.exit_code, Some(0 | 129 | 130)),
            "{:?} kept with exit code {:?}",
            e.status,
            e.exit_code
        );
    }
    if matches!(e.status, Status::Failed | Status::Aborted | Status::Unknown) {
        ensure!(
            e.error_category.is_some(),
            "{:?} without a category",
            e.status
        );
    } else {
        ensure!(
            e.error_signature.is_none(),
            "{:?} with an error signature",
            e.status
        );
    }
    let sent = accepted
        .msg_id
        .strip_prefix(&format!("{}:", e.execution_id))
        .ok_or_else(|| format!("msg id {:?} without the execution id", accepted.msg_id))?;
    let sent = if e.random_id.is_empty() || e.random_id == e.execution_id {
        sent
    } else {
        sent.strip_suffix(&format!(":{}", e.random_id))
            .ok_or_else(|| format!("msg id {:?} without the random id", accepted.msg_id))?
    };
    ensure!(
        Status::ALL.iter().any(|s| s.as_str() == sent),
        "msg id {:?} has no status after the execution id",
        accepted.msg_id
    );

    // Repairs: recorded once each, in order, and only when the body needed them.
    ensure!(
        e.rescued.windows(2).all(|w| w[0] < w[1]),
        "rescued not sorted and unique: {:?}",
        e.rescued
    );
    ensure!(
        e.rescued.is_empty() || !plain_json_object(body),
        "plain JSON got repairs {:?}",
        e.rescued
    );
    for kind in &e.rescued {
        let i = RescueKind::ALL
            .iter()
            .position(|k| k == kind)
            .unwrap_or_default();
        tally.rescued[i].fetch_add(1, Ordering::Relaxed);
    }

    // The wire form reads back whole, fits the broker, and validates again to the same event.
    let wire = e.to_json();
    ensure!(
        wire.len() <= MAX_WIRE_BYTES,
        "wire form of {} bytes is over the broker's max payload",
        wire.len()
    );
    let back: Event =
        serde_json::from_slice(&wire).map_err(|err| format!("wire form does not parse: {err}"))?;
    ensure!(&back == e, "wire round trip changed the event");
    let again = schema::validate(&wire, reception())
        .map_err(|r| format!("the wire form is rejected: {r:?}"))?;
    let mut expected = e.clone();
    expected.rescued.clear();
    ensure!(
        again.event == expected,
        "validating the wire form changed the event:\n first {e:?}\n again {:?}",
        again.event
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Seeds, fixtures and the runs

fn schema_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/fixtures")
}

fn fuzz_dir() -> PathBuf {
    schema_fixtures().join("fuzz")
}

/// Files of `dir` whose names end in `suffix`, sorted by name.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// Kept fuzz bodies larger than this are replayed but not grown from: the corpus has its large bodies
/// already, and each large seed slows every run.
const MAX_KEPT_SEED_BYTES: usize = 16 * 1024;

/// The payload corpus and the small kept fuzz bodies: what every input grows from.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let read =
            |p: &PathBuf| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let payloads = files(&schema_fixtures().join("payloads"), ".json");
        let kept = files(&fuzz_dir(), ".body");
        let mut seeds: Vec<Vec<u8>> = payloads.iter().map(read).collect();
        seeds.extend(
            kept.iter()
                .map(read)
                .filter(|body| body.len() <= MAX_KEPT_SEED_BYTES),
        );
        seeds
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// A 32-byte seed from `FUZZ_SEED` (hex) or from the clock.
fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    match std::env::var("FUZZ_SEED") {
        Ok(hex) => {
            assert_eq!(hex.len(), 64, "FUZZ_SEED must be 64 hex digits");
            for (i, byte) in seed.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("FUZZ_SEED is hex");
            }
        }
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos();
            seed[..16].copy_from_slice(&nanos.to_le_bytes());
            seed[16..24].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
        }
    }
    seed
}

/// A short stable name for a body (FNV-1a), so the same failure is kept once.
fn fingerprint(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[test]
fn bodies_grown_from_the_corpus_get_202_400_or_413() {
    let cases: u32 = std::env::var("FUZZ_CASES")
        .ok()
        .map(|s| s.parse().expect("FUZZ_CASES is a number"))
        .unwrap_or(CI_CASES);
    let limit = default_limit();
    let corpus = corpus();
    let seed = seed();
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let config = Config {
        cases,
        max_shrink_iters: 4096,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "../schema/fixtures/fuzz/proptest-regressions.txt",
        ))),
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let runtime = runtime();
    let tally = Tally::default();
    let started = Instant::now();
    let result = runner.run(&input(), |input| {
        let (body, canary) = input.body(corpus, limit);
        check(&body, limit, canary, &runtime, &tally)
            .map(|_| ())
            .map_err(TestCaseError::fail)
    });
    tally.print(&seed_hex, cases, started.elapsed());
    match result {
        Ok(()) => {
            assert!(tally.total() >= u64::from(cases), "fewer inputs than cases");
            for (answer, count) in [
                ("202", &tally.accepted),
                ("400", &tally.rejected),
                ("413", &tally.too_large),
            ] {
                assert!(
                    count.load(Ordering::Relaxed) > 0,
                    "no input got {answer}: the mutations miss a whole answer"
                );
            }
        }
        Err(TestError::Fail(reason, input)) => {
            let (body, _) = input.body(corpus, limit);
            let path = fuzz_dir().join(format!("found-{}.body", fingerprint(&body)));
            std::fs::write(&path, &body).expect("keep the failing body");
            panic!(
                "fuzz failure: {reason}\ninput: {input:?}\nbody ({} bytes) kept in {}",
                body.len(),
                path.display()
            );
        }
        Err(TestError::Abort(reason)) => panic!("fuzz aborted: {reason}"),
    }
}

/// The answer a kept body must get: `<name>.<status>.body` pins one, `<name>.body` only the checks.
fn pinned_answer(path: &Path) -> Option<Answer> {
    let name = path.file_name()?.to_str()?.strip_suffix(".body")?;
    match name.rsplit('.').next()? {
        "202" => Some(Answer::Accepted),
        "400" => Some(Answer::Rejected),
        "413" => Some(Answer::TooLarge),
        _ => None,
    }
}

#[test]
fn kept_fuzz_bodies_keep_their_answers() {
    let limit = default_limit();
    let runtime = runtime();
    let tally = Tally::default();
    let kept = files(&fuzz_dir(), ".body");
    assert!(
        !kept.is_empty(),
        "no kept bodies in {}",
        fuzz_dir().display()
    );
    for path in &kept {
        let body = std::fs::read(path).expect("kept body");
        let answer = check(&body, limit, false, &runtime, &tally)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some(pinned) = pinned_answer(path) {
            assert_eq!(answer, pinned, "{}", path.display());
        }
    }
}

#[test]
fn the_limit_is_exact_and_planted_addresses_are_masked() {
    let limit = default_limit();
    let runtime = runtime();
    let tally = Tally::default();
    let seed = std::fs::read(schema_fixtures().join("payloads/04_lxc_success.json")).expect("04");
    for (delta, pad) in [
        (0, Pad::Error),
        (1, Pad::Error),
        (0, Pad::Trailing),
        (1, Pad::Trailing),
        (-1, Pad::Unknown),
        (1, Pad::Unknown),
    ] {
        let mut body = seed.clone();
        resize(&mut body, (limit as i64 + delta) as usize, pad);
        assert_eq!(body.len() as i64, limit as i64 + delta);
        let want = if delta > 0 {
            Answer::TooLarge
        } else {
            Answer::Accepted
        };
        let got = check(&body, limit, false, &runtime, &tally)
            .unwrap_or_else(|e| panic!("{delta} {pad:?}: {e}"));
        assert_eq!(got, want, "{delta} {pad:?}");
    }
    // A failed install whose log carries every planted address, short and cut.
    let failed =
        std::fs::read(schema_fixtures().join("payloads/11_addon_failed.json")).expect("11");
    for lines in [0, 4_000] {
        let mut body = failed.clone();
        let (from, to) = find_value(&body, "error").expect("11 has an error");
        let log = Edge::Canary {
            which: SECRETS.len(),
            lines,
            raw_newlines: lines > 0,
        };
        replace(&mut body, from..to, &log.render());
        let got = check(&body, limit, true, &runtime, &tally)
            .unwrap_or_else(|e| panic!("{lines} lines: {e}"));
        assert_eq!(got, Answer::Accepted, "{lines} lines");
    }
    assert_eq!(tally.canaries.load(Ordering::Relaxed), 2);
    // The 4,000-line log, and the padded `error` of the body exactly at the limit.
    assert_eq!(tally.logs_cut.load(Ordering::Relaxed), 2);
}

#[test]
fn the_checks_catch_broken_events_and_answers() {
    let tally = Tally::default();
    let body = std::fs::read(schema_fixtures().join("payloads/11_addon_failed.json")).expect("11");
    let good = judge_body(&body, default_limit(), reception()).expect("11 is accepted");
    check_accepted(&good, &body, false, &tally).expect("11 passes");
    type Breakage = (&'static str, fn(&mut Accepted));
    let breakages: [Breakage; 10] = [
        ("ct_type", |a| a.event.ct_type = Some(3)),
        ("random_id", |a| a.event.random_id = "-x".into()),
        ("nsapp", |a| a.event.nsapp = " app".into()),
        ("os_type", |a| a.event.os_type = Some("Debian".into())),
        ("cpu_model", |a| a.event.cpu_model = Some("a\u{1}b".into())),
        ("error", |a| {
            a.event.error = Some("x".repeat(MAX_ERROR_BYTES + 1));
        }),
        ("10.20.30.40", |a| {
            a.event.error = Some("cannot reach 10.20.30.40 now".into());
        }),
        ("kept with exit code", |a| a.event.exit_code = Some(0)),
        ("msg id", |a| a.msg_id = "other:failed".into()),
        ("rescued", |a| {
            a.event.rescued = vec![RescueKind::TrailingData, RescueKind::EmptyValue];
        }),
    ];
    for (what, breakage) in breakages {
        let mut broken = good.clone();
        breakage(&mut broken);
        let err = check_accepted(&broken, &body, true, &tally)
            .expect_err(&format!("a broken {what} passes"));
        assert!(err.contains(what), "{what}: {err}");
    }
    // A repair reported for a body that needed none, and a wire form that validates differently.
    let mut repaired = good.clone();
    repaired.event.rescued = vec![RescueKind::HexEscape];
    let err = check_accepted(&repaired, &body, false, &tally).expect_err("repairs on plain JSON");
    assert!(err.contains("plain JSON"), "{err}");
    let mut unstable = good.clone();
    unstable.event.error_signature = Some("not what the log gives".into());
    let err = check_accepted(&unstable, &body, false, &tally).expect_err("unstable wire form");
    assert!(err.contains("validating the wire form"), "{err}");

    let object = br#"{"a": 1}"#;
    assert!(check_rejected("invalid_json", "the body is not", &Value::Null, object).is_err());
    assert!(check_rejected("invalid_json", "the body is not", &Value::Null, b"{").is_ok());
    assert!(check_rejected("invalid_field", "the field x", &"x".into(), object).is_err());
    assert!(check_rejected(
        "missing_field",
        "the field os_type",
        &"os_type".into(),
        object
    )
    .is_err());
    assert!(check_rejected(
        "invalid_field",
        "the field os_type",
        &"os_type".into(),
        object
    )
    .is_ok());
}

/// A finding of the campaign: the log of this body is cut at a byte count right after the `-` of
/// `-10.1.2.3`. Masked whole, `-10.1.2.3` reads as a version and stays; after the cut `10.1.2.3` opened
/// the kept tail alone, unmasked, and masking the stored log again changed it. The cut text is now
/// masked again before it is stored: the quad that stands alone is masked, and the stored log is stable.
#[test]
fn a_cut_log_that_frees_a_dotted_quad_masks_it() {
    let path = fuzz_dir().join("cut_log_frees_a_dotted_quad.202.body");
    let body = std::fs::read(&path).expect("kept body");
    let accepted = judge_body(&body, default_limit(), reception()).expect("accepted");
    let error = accepted.event.error.as_deref().expect("error kept");
    assert!(
        error.contains("-10.1.2.3 "),
        "the versions stay before the cut"
    );
    let tail = &error[error.find(CUT_MARKER).expect("cut") + CUT_MARKER.len()..];
    assert!(tail.starts_with("10.x.x.x"), "tail: {:?}", &tail[..40]);
    assert_eq!(schema::privacy::mask(error), error, "stable under masking");
}
