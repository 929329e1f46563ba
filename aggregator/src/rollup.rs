//! Sliding-window rollups as a pure function of the tracked installs and the time: for every window, the
//! global group and one group per repo, type and app, plus the per-app index and the new signatures.
//! The result is the full set of KV values (key → JSON bytes); the publisher sends the changed ones.
//!
//! An install belongs to a window when its first event is inside it; its counts follow its current state
//! (so a failure reported now for an install started 10 minutes ago counts in the 1 h window).
//!
//! Names are client text, so what is kept per name is bounded ([`Limits`]): an app gets its own group,
//! key and index line only once it was started by at least `min_clients` distinct clients in the
//! longest window, and only the `max_apps` most installed of those; the installs of every other name
//! are summed in the index's `other`. Likewise only the `max_signatures` most frequent signatures are
//! named in top lists and `signatures.new`. The global, repo and type groups count every install.

use std::collections::{BTreeMap, HashMap, HashSet};

use schema::span::Span;
use schema::stats::{
    apps_key, group_key, AppSummary, AppsIndex, CategoryCount, ExitCodeCount, GroupStats,
    NameCount, NewSignature, NewSignatures, OtherApps, Scope, SignatureCount, KEY_NEW_SIGNATURES,
    SNAPSHOT_VERSION,
};
use schema::{Category, Kind, RepoSource, Status};
use time::OffsetDateTime;

use crate::tracker::{Slot, Tracker};

/// What to roll up.
#[derive(Debug, Clone)]
pub struct RollupConfig {
    /// Sorted, shortest first, without duplicates.
    pub windows: Vec<Span>,
    /// A signature is new when its first install lies within this span.
    pub signature_window: Span,
    /// Length of the top lists.
    pub top_n: usize,
    /// Bounds on what is kept per name.
    pub limits: Limits,
}

/// Bounds on what a rollup keeps per name (client text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// An app is tracked one by one once this many distinct clients (`random_id`) started it in the
    /// longest window.
    pub min_clients: u32,
    /// Most apps tracked one by one (most installs first).
    pub max_apps: usize,
    /// Most signatures named in top lists and `signatures.new` (most installs first).
    pub max_signatures: usize,
}

impl Limits {
    /// No bound: every name tracked (for tests of the figures).
    pub const NONE: Limits = Limits {
        min_clients: 1,
        max_apps: usize::MAX,
        max_signatures: usize::MAX,
    };
}

/// What a rollup did with the names of one kind, for the metrics and the name stores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NameReport {
    /// Distinct names with installs in the longest window.
    pub distinct: usize,
    /// Of those, tracked one by one.
    pub tracked: usize,
    /// Names that qualified but were left out because the cap was full.
    pub capped: usize,
    /// Hashes whose text the name store should keep (qualified, best first, at most the cap).
    pub wanted: HashSet<u32>,
    /// Every hash an install refers to, sorted.
    pub present: Vec<u32>,
}

/// The names of one rollup, apps and signatures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub apps: NameReport,
    pub signatures: NameReport,
}

/// Cap of `signatures.new`.
const MAX_NEW_SIGNATURES: usize = 100;
/// Apps listed per new signature.
const MAX_SIGNATURE_APPS: usize = 5;

/// Durations in buckets: exact below 64 s, then 32 buckets per power of two (within 3 %).
mod histogram {
    pub fn bucket(v: u32) -> usize {
        if v < 64 {
            return v as usize;
        }
        let e = 31 - v.leading_zeros();
        let sub = (v >> (e - 5)) & 31;
        64 + (e as usize - 6) * 32 + sub as usize
    }

    /// The middle of a bucket.
    pub fn value(b: usize) -> u32 {
        if b < 64 {
            return b as u32;
        }
        let e = ((b - 64) / 32 + 6) as u32;
        let sub = ((b - 64) % 32) as u32;
        let width = 1u32 << (e - 5);
        ((32 + sub) << (e - 5)).saturating_add(width / 2)
    }

    /// Nearest-rank percentile `q` (0..=1) of the counts.
    pub fn percentile(counts: &[u32], q: f64) -> Option<u32> {
        let n: u64 = counts.iter().map(|c| u64::from(*c)).sum();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, c) in counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(value(b));
            }
        }
        None
    }
}

#[derive(Debug, Default)]
struct Acc {
    started: u64,
    in_progress: u64,
    success: u64,
    failed: u64,
    aborted: u64,
    unknown: u64,
    durations: Vec<u32>,
    exit_codes: HashMap<u8, u64>,
    categories: HashMap<Category, u64>,
    signatures: HashMap<u32, u64>,
    /// Which of the 256 client hashes started installs of the group.
    clients: [u64; 4],
}

impl Acc {
    /// Adds an install; its signature counts only when `tracked_signature`.
    fn add(&mut self, s: &Slot, tracked_signature: bool) {
        self.started += 1;
        let client = s.client();
        self.clients[usize::from(client >> 6)] |= 1 << (client & 63);
        match s.status {
            Status::Success => self.success += 1,
            Status::Failed => self.failed += 1,
            Status::Aborted => self.aborted += 1,
            Status::Unknown => self.unknown += 1,
            Status::Installing | Status::Validation | Status::Configuring => {
                self.in_progress += 1;
                return;
            }
        }
        if let Some(d) = s.duration() {
            let b = histogram::bucket(d);
            if self.durations.len() <= b {
                self.durations.resize(b + 1, 0);
            }
            self.durations[b] += 1;
        }
        if s.status == Status::Success {
            return;
        }
        if let Some(code) = s.exit_code {
            *self.exit_codes.entry(code).or_default() += 1;
        }
        if let Some(category) = s.category {
            *self.categories.entry(category).or_default() += 1;
        }
        if s.signature != 0 && tracked_signature {
            *self.signatures.entry(s.signature).or_default() += 1;
        }
    }

    fn clients(&self) -> u32 {
        self.clients.iter().map(|w| w.count_ones()).sum()
    }

    fn failure_rate(&self) -> Option<f64> {
        let decided = self.success + self.failed;
        (decided > 0).then(|| round4(self.failed as f64 / decided as f64))
    }

    fn stats(
        &self,
        window: Span,
        scope: Scope,
        subject: &str,
        top_n: usize,
        tracker: &Tracker,
    ) -> GroupStats {
        GroupStats {
            v: SNAPSHOT_VERSION,
            window: window.label(),
            window_secs: window.secs(),
            scope,
            subject: subject.to_string(),
            started: self.started,
            in_progress: self.in_progress,
            success: self.success,
            failed: self.failed,
            aborted: self.aborted,
            unknown: self.unknown,
            failure_rate: self.failure_rate(),
            duration_p50_secs: histogram::percentile(&self.durations, 0.5),
            duration_p95_secs: histogram::percentile(&self.durations, 0.95),
            top_exit_codes: top(&self.exit_codes, top_n)
                .into_iter()
                .map(|(code, count)| ExitCodeCount {
                    code,
                    category: schema::exit_codes::category(code),
                    description: schema::exit_codes::describe(code).into_owned(),
                    count,
                })
                .collect(),
            top_categories: top(&self.categories, top_n)
                .into_iter()
                .map(|(category, count)| CategoryCount { category, count })
                .collect(),
            top_signatures: top(&self.signatures, top_n)
                .into_iter()
                .map(|(id, count)| SignatureCount {
                    signature: tracker.signatures.name(id).unwrap_or_default().to_string(),
                    count,
                })
                .collect(),
            clients: Some(self.clients()),
        }
    }

    fn other(&self, names: u64) -> OtherApps {
        OtherApps {
            names,
            started: self.started,
            in_progress: self.in_progress,
            success: self.success,
            failed: self.failed,
            aborted: self.aborted,
            unknown: self.unknown,
            failure_rate: self.failure_rate(),
        }
    }

    fn summary(&self, app: &str) -> AppSummary {
        AppSummary {
            app: app.to_string(),
            started: self.started,
            in_progress: self.in_progress,
            success: self.success,
            failed: self.failed,
            aborted: self.aborted,
            unknown: self.unknown,
            failure_rate: self.failure_rate(),
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The `n` largest counts, ties by key, deterministic.
fn top<K: Copy + Ord>(counts: &HashMap<K, u64>, n: usize) -> Vec<(K, u64)> {
    let mut all: Vec<(K, u64)> = counts.iter().map(|(k, c)| (*k, *c)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

struct WindowAcc {
    span: Span,
    /// Oldest first_seen (unix seconds) inside the window.
    from: i64,
    global: Acc,
    repos: [Acc; RepoSource::ALL.len()],
    kinds: [Acc; Kind::ALL.len()],
    /// By position in the tracked apps.
    apps: Vec<Option<Acc>>,
    /// Installs of untracked app names, and those names' hashes (sorted and counted at the end).
    other: Acc,
    other_names: Vec<u32>,
}

fn repo_index(r: RepoSource) -> usize {
    RepoSource::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

fn kind_index(k: Kind) -> usize {
    Kind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

#[derive(Default)]
struct SigAcc {
    first_seen: u32,
    installs: u64,
    apps: HashMap<u32, u64>,
}

/// Per distinct name of the longest window: (hash, installs, distinct clients, earliest first_seen),
/// from one sort of `(hash, low)` pairs packed in a u64 (transient: 8 bytes per install).
fn count_names(mut pairs: Vec<u64>) -> Vec<(u32, u64, u32, u32)> {
    pairs.sort_unstable();
    let mut out: Vec<(u32, u64, u32, u32)> = Vec::new();
    let mut last: Option<u64> = None;
    for p in pairs {
        let (hash, low) = ((p >> 32) as u32, p as u32);
        match out.last_mut() {
            Some(entry) if entry.0 == hash => {
                entry.1 += 1;
                if last != Some(p) {
                    entry.2 += 1;
                }
            }
            _ => out.push((hash, 1, 1, low)),
        }
        last = Some(p);
    }
    out
}

/// Picks the names to track among `counted` (hash, installs, distinct lows, _): those with at least
/// `min` distinct lows, most installs first, at most `cap`, and only those whose text is kept. Returns
/// the tracked (hash, text) in rank order and the report.
fn select<'a>(
    counted: &[(u32, u64, u32, u32)],
    min: u32,
    cap: usize,
    text: impl Fn(u32) -> Option<&'a str>,
) -> (Vec<(u32, &'a str)>, NameReport) {
    let mut qualified: Vec<(u32, u64)> = counted
        .iter()
        .filter(|c| c.2 >= min)
        .map(|c| (c.0, c.1))
        .collect();
    qualified.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let capped = qualified.len().saturating_sub(cap);
    let wanted: HashSet<u32> = qualified.iter().take(cap).map(|q| q.0).collect();
    let mut named: Vec<(u32, u64, &str)> = qualified
        .iter()
        .filter_map(|(h, n)| text(*h).map(|t| (*h, *n, t)))
        .collect();
    named.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(b.2)));
    named.truncate(cap);
    let tracked: Vec<(u32, &str)> = named.into_iter().map(|(h, _, t)| (h, t)).collect();
    let report = NameReport {
        distinct: counted.len(),
        tracked: tracked.len(),
        capped,
        wanted,
        present: counted.iter().map(|c| c.0).collect(),
    };
    (tracked, report)
}

/// Whether an install's signature counts (in top lists and as a new signature): a failure's, not the
/// stuck-install timeout's own text.
fn counts_signature(slot: &Slot, stuck: u32) -> bool {
    slot.signature != 0 && slot.signature != stuck && slot.status != Status::Success
}

fn app_counts(tracker: &Tracker) -> Vec<(u32, u64, u32, u32)> {
    count_names(
        tracker
            .slots()
            .map(|s| u64::from(s.app) << 32 | u64::from(s.client()))
            .collect(),
    )
}

fn signature_counts(tracker: &Tracker) -> Vec<(u32, u64, u32, u32)> {
    let stuck = tracker.signatures.hash(schema::stuck::STUCK_ERROR);
    count_names(
        tracker
            .slots()
            .filter(|s| counts_signature(s, stuck))
            .map(|s| u64::from(s.signature) << 32 | u64::from(s.first_seen))
            .collect(),
    )
}

/// What a rollup would track, without the rollup: keeps the name stores bounded while replaying.
pub fn name_report(tracker: &Tracker, limits: Limits) -> Report {
    let (_, apps) = select(
        &app_counts(tracker),
        limits.min_clients,
        limits.max_apps,
        |h| tracker.apps.name(h),
    );
    let (_, signatures) = select(&signature_counts(tracker), 1, limits.max_signatures, |h| {
        tracker.signatures.name(h)
    });
    Report { apps, signatures }
}

/// Every KV value of one snapshot, by key.
pub fn rollup(
    tracker: &Tracker,
    now: OffsetDateTime,
    config: &RollupConfig,
) -> BTreeMap<String, Vec<u8>> {
    rollup_with_report(tracker, now, config).0
}

/// Every KV value of one snapshot, by key, and what was done with the names.
pub fn rollup_with_report(
    tracker: &Tracker,
    now: OffsetDateTime,
    config: &RollupConfig,
) -> (BTreeMap<String, Vec<u8>>, Report) {
    let now_secs = now.unix_timestamp();
    let limits = config.limits;
    let signature_from = now_secs - config.signature_window.secs() as i64;
    let stuck = tracker.signatures.hash(schema::stuck::STUCK_ERROR);

    // Which names are tracked: one sort of the apps (with their clients) and one of the signatures
    // (with their earliest install).
    let app_counts = app_counts(tracker);
    let (apps, app_report) = select(&app_counts, limits.min_clients, limits.max_apps, |h| {
        tracker.apps.name(h)
    });
    drop(app_counts);
    let sig_counts = signature_counts(tracker);
    let (signatures, sig_report) = select(&sig_counts, 1, limits.max_signatures, |h| {
        tracker.signatures.name(h)
    });
    let app_pos: HashMap<u32, usize> = apps.iter().enumerate().map(|(i, a)| (a.0, i)).collect();
    let tracked_sigs: HashSet<u32> = signatures.iter().map(|s| s.0).collect();
    // Tracked signatures whose earliest install (in the whole history) lies in the signature window.
    let mut fresh_sigs: HashMap<u32, SigAcc> = sig_counts
        .iter()
        .filter(|c| tracked_sigs.contains(&c.0) && i64::from(c.3) >= signature_from)
        .map(|c| {
            let acc = SigAcc {
                first_seen: c.3,
                ..SigAcc::default()
            };
            (c.0, acc)
        })
        .collect();
    drop(sig_counts);

    let mut windows: Vec<WindowAcc> = config
        .windows
        .iter()
        .map(|span| WindowAcc {
            span: *span,
            from: now_secs - span.secs() as i64,
            global: Acc::default(),
            repos: Default::default(),
            kinds: Default::default(),
            apps: Vec::new(),
            other: Acc::default(),
            other_names: Vec::new(),
        })
        .collect();
    for slot in tracker.slots() {
        let first = i64::from(slot.first_seen);
        let app = app_pos.get(&slot.app).copied();
        let sig = tracked_sigs.contains(&slot.signature);
        for w in windows.iter_mut().rev() {
            if first < w.from {
                break;
            }
            w.global.add(slot, sig);
            w.repos[repo_index(slot.repo)].add(slot, sig);
            w.kinds[kind_index(slot.kind)].add(slot, sig);
            match app {
                Some(app) => {
                    if w.apps.len() <= app {
                        w.apps.resize_with(app + 1, || None);
                    }
                    w.apps[app].get_or_insert_with(Acc::default).add(slot, sig);
                }
                None => {
                    w.other.add(slot, sig);
                    w.other_names.push(slot.app);
                }
            }
        }
        if counts_signature(slot, stuck) {
            if let Some(s) = fresh_sigs.get_mut(&slot.signature) {
                s.installs += 1;
                if let Some(app) = app {
                    *s.apps.entry(app as u32).or_default() += 1;
                }
            }
        }
    }

    let mut out = BTreeMap::new();
    let mut put = |key: String, value: &dyn erased::Json| {
        out.insert(key, value.bytes());
    };
    let top_n = config.top_n;
    for w in &mut windows {
        let span = w.span;
        put(
            group_key(span, Scope::Global, ""),
            &w.global.stats(span, Scope::Global, "", top_n, tracker),
        );
        for (acc, repo) in w.repos.iter().zip(RepoSource::ALL) {
            if acc.started > 0 {
                let stats = acc.stats(span, Scope::Repo, repo.as_str(), top_n, tracker);
                put(group_key(span, Scope::Repo, repo.as_str()), &stats);
            }
        }
        for (acc, kind) in w.kinds.iter().zip(Kind::ALL) {
            if acc.started > 0 {
                let stats = acc.stats(span, Scope::Type, kind.as_str(), top_n, tracker);
                put(group_key(span, Scope::Type, kind.as_str()), &stats);
            }
        }
        let mut index = Vec::new();
        for (pos, acc) in w.apps.iter().enumerate() {
            let Some(acc) = acc else { continue };
            let name = apps[pos].1;
            put(
                group_key(span, Scope::App, name),
                &acc.stats(span, Scope::App, name, top_n, tracker),
            );
            index.push(acc.summary(name));
        }
        index.sort_by(|a, b| b.started.cmp(&a.started).then(a.app.cmp(&b.app)));
        let other = (w.other.started > 0).then(|| {
            w.other_names.sort_unstable();
            w.other_names.dedup();
            w.other.other(w.other_names.len() as u64)
        });
        put(
            apps_key(span),
            &AppsIndex {
                v: SNAPSHOT_VERSION,
                window: span.label(),
                window_secs: span.secs(),
                apps: index,
                other,
            },
        );
    }

    let mut fresh: Vec<NewSignature> = fresh_sigs
        .into_iter()
        .filter(|(_, s)| s.installs > 0)
        .map(|(id, s)| NewSignature {
            signature: tracker.signatures.name(id).unwrap_or_default().to_string(),
            installs: s.installs,
            first_seen: OffsetDateTime::from_unix_timestamp(i64::from(s.first_seen)).unwrap_or(now),
            apps: top(&s.apps, MAX_SIGNATURE_APPS)
                .into_iter()
                .map(|(app, count)| NameCount {
                    name: apps[app as usize].1.to_string(),
                    count,
                })
                .collect(),
        })
        .collect();
    fresh.sort_by(|a, b| {
        b.installs
            .cmp(&a.installs)
            .then(a.signature.cmp(&b.signature))
    });
    fresh.truncate(MAX_NEW_SIGNATURES);
    let history = config
        .windows
        .last()
        .copied()
        .unwrap_or(config.signature_window);
    put(
        KEY_NEW_SIGNATURES.to_string(),
        &NewSignatures {
            v: SNAPSHOT_VERSION,
            window: config.signature_window.label(),
            window_secs: config.signature_window.secs(),
            history: history.label(),
            signatures: fresh,
        },
    );
    let report = Report {
        apps: app_report,
        signatures: sig_report,
    };
    (out, report)
}

/// Serializing the snapshot types (plain structs) into a Vec cannot fail.
mod erased {
    pub trait Json {
        fn bytes(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::{body, event};

    fn config() -> RollupConfig {
        RollupConfig {
            windows: vec!["1h".parse().expect("span"), "24h".parse().expect("span")],
            signature_window: "1h".parse().expect("span"),
            top_n: 3,
            // These tests are about the figures: every name tracked (the bounds have their own tests).
            limits: Limits::NONE,
        }
    }

    /// (started, in_progress, success, failed, aborted, unknown, failure_rate, p50, p95)
    type Expected = (
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        Option<f64>,
        Option<u32>,
        Option<u32>,
    );

    /// A KV value with every list sorted: two trackers hash names with their own keys, so entries of a
    /// top list with equal counts come in another order.
    fn normalized(bytes: &[u8]) -> serde_json::Value {
        fn sort(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Array(items) => {
                    items.iter_mut().for_each(sort);
                    items.sort_by_key(|item| item.to_string());
                }
                serde_json::Value::Object(map) => map.values_mut().for_each(sort),
                _ => {}
            }
        }
        let mut v = serde_json::from_slice(bytes).expect("a KV value is JSON");
        sort(&mut v);
        v
    }

    /// Shedding full states (`Tracker::with_state_cap`) changes no figure of a snapshot when the
    /// installs' events are an `installing` and a final, in any order.
    #[test]
    fn shed_states_change_no_figure() {
        let mut events = Vec::new();
        for i in 0..40i64 {
            let exec = format!("x{i}");
            let app = ["docker", "nginx", "jellyfin"][i as usize % 3];
            events.push((i, body(&exec, app, "installing", r#","core_count":2"#)));
            match i % 4 {
                0 => events.push((
                    i + 30,
                    body(&exec, app, "success", r#","install_duration":25"#),
                )),
                1 => events.push((
                    i + 20,
                    body(
                        &exec,
                        app,
                        "failed",
                        r#","exit_code":100,"error":"apt failed""#,
                    ),
                )),
                2 => events.insert(
                    0,
                    (i + 10, body(&exec, app, "aborted", r#","exit_code":130"#)),
                ),
                _ => {}
            }
        }
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_100).expect("now");
        let snapshot = |cap: usize| {
            let mut tracker = Tracker::new().with_state_cap(cap);
            for (at, b) in &events {
                tracker.apply(&event(*at, b));
            }
            (
                rollup(&tracker, now, &config()),
                tracker.pending(),
                tracker.take_shed(),
            )
        };
        let (full, pending, shed) = snapshot(usize::MAX);
        assert_eq!(shed, 0);
        for cap in [0, 1, 5] {
            let (capped, capped_pending, capped_shed) = snapshot(cap);
            assert!(capped_shed > 0, "cap {cap} sheds");
            assert_eq!(capped_pending, pending, "cap {cap}: in progress");
            for (key, value) in &full {
                assert_eq!(
                    capped.get(key).map(|v| normalized(v)),
                    Some(normalized(value)),
                    "cap {cap}: {key}"
                );
            }
            assert_eq!(capped.len(), full.len(), "cap {cap}: the same keys");
        }
    }

    /// Rolls up `events` (seconds after the test epoch, body) at `now` seconds and checks one key.
    fn check(events: &[(i64, String)], now: i64, key: &str, expected: Option<Expected>) {
        let mut tracker = Tracker::new();
        for (at, b) in events {
            tracker.apply(&event(*at, b));
        }
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000 + now).expect("now");
        let values = rollup(&tracker, now, &config());
        let got = values.get(key).map(|bytes| {
            let s: GroupStats = serde_json::from_slice(bytes).expect("group stats");
            (
                s.started,
                s.in_progress,
                s.success,
                s.failed,
                s.aborted,
                s.unknown,
                s.failure_rate,
                s.duration_p50_secs,
                s.duration_p95_secs,
            )
        });
        assert_eq!(got, expected, "{key} over {events:?}");
    }

    fn install(exec: &str, app: &str, status: &str, duration: u32) -> String {
        body(
            exec,
            app,
            status,
            &format!(r#","install_duration":{duration}"#),
        )
    }

    #[test]
    fn counts_rates_and_durations_per_window_and_group() {
        let half: Vec<(i64, String)> = (0..40)
            .map(|i| {
                let status = if i % 2 == 0 { "failed" } else { "success" };
                (
                    i,
                    install(&format!("x{i}"), "docker", status, 10 + i as u32),
                )
            })
            .collect();
        let full = Some((40, 0, 20, 20, 0, 0, Some(0.5), Some(29), Some(47)));
        check(&half, 100, "1h.global", full);
        check(&half, 100, "24h.app.docker", full);
        check(&half, 100, "1h.type.lxc", full);
        check(&half, 100, "1h.repo.ProxmoxVE", full);
        check(&half, 100, "1h.repo.external", None);
        check(&half, 100, "1h.app.other", None);
        // Two hours later the installs left the 1 h window but not the 24 h one.
        check(&half, 7300, "24h.global", full);
        check(
            &half,
            7300,
            "1h.global",
            Some((0, 0, 0, 0, 0, 0, None, None, None)),
        );

        let mixed = vec![
            (0, body("a", "app", "installing", "")),
            (1, install("b", "app", "aborted", 5)),
            (2, body("c", "app", "unknown", "")),
            (3, install("d", "app", "success", 100)),
            (4, install("e", "app", "success", 100)),
            (5, install("f", "app", "success", 3000)),
        ];
        check(
            &mixed,
            10,
            "1h.app.app",
            Some((6, 1, 3, 0, 1, 1, Some(0.0), Some(101), Some(2976))),
        );
    }

    #[test]
    fn top_lists_and_index_are_ordered() {
        let events: Vec<(i64, String)> = (0..6)
            .map(|i| {
                let code = [100, 100, 100, 22, 22, 1][i];
                let app = if i < 4 { "a" } else { "b" };
                (
                    i as i64,
                    body(
                        &format!("x{i}"),
                        app,
                        "failed",
                        &format!(r#","exit_code":{code}"#),
                    ),
                )
            })
            .collect();
        let mut tracker = Tracker::new();
        for (at, b) in &events {
            tracker.apply(&event(*at, b));
        }
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_010).expect("now");
        let values = rollup(&tracker, now, &config());
        let global: GroupStats = serde_json::from_slice(&values["1h.global"]).expect("json");
        let codes: Vec<(u8, u64)> = global
            .top_exit_codes
            .iter()
            .map(|c| (c.code, c.count))
            .collect();
        assert_eq!(codes, vec![(100, 3), (22, 2), (1, 1)]);
        assert_eq!(global.top_categories[0].category, Category::Apt);
        assert_eq!(global.top_signatures[0].count, 3);
        let index: AppsIndex = serde_json::from_slice(&values["1h.apps"]).expect("json");
        let apps: Vec<(&str, u64)> = index
            .apps
            .iter()
            .map(|a| (a.app.as_str(), a.started))
            .collect();
        assert_eq!(apps, vec![("a", 4), ("b", 2)]);
    }

    #[test]
    fn a_signature_is_new_only_when_unseen_before_its_window() {
        let failing = |exec: &str, line: &str| {
            body(
                exec,
                "app",
                "failed",
                &format!(r#","exit_code":1,"error":"x\n{line}""#),
            )
        };
        let events = vec![
            (0, failing("old1", "E: Unable to locate package foo")),
            (7200, failing("old2", "E: Unable to locate package foo")),
            (7200, failing("new1", "npm ERR! code ERESOLVE")),
            (7201, failing("new2", "npm ERR! code ERESOLVE")),
        ];
        let mut tracker = Tracker::new();
        for (at, b) in &events {
            tracker.apply(&event(*at, b));
        }
        let now = OffsetDateTime::from_unix_timestamp(1_700_007_300).expect("now");
        let values = rollup(&tracker, now, &config());
        let fresh: NewSignatures =
            serde_json::from_slice(&values[KEY_NEW_SIGNATURES]).expect("json");
        let got: Vec<(&str, u64)> = fresh
            .signatures
            .iter()
            .map(|s| (s.signature.as_str(), s.installs))
            .collect();
        assert_eq!(got, vec![("npm ERR! code ERESOLVE", 2)]);
        assert_eq!(fresh.history, "24h");
    }

    /// `installs` failed installs of `app`, each from its own client unless `client` is given.
    fn failing(tracker: &mut Tracker, at: i64, app: &str, installs: usize, client: Option<&str>) {
        for i in 0..installs {
            let exec = format!("{app}-{i}");
            let random_id = client.map_or_else(|| format!("r-{exec}"), str::to_string);
            let b = format!(
                r#"{{"random_id":"{random_id}","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"failed","exit_code":1,"error":"x\nE: {app} broke"}}"#
            );
            tracker.apply(&event(at, &b));
        }
    }

    fn bounded(min_clients: u32, max_apps: usize, max_signatures: usize) -> RollupConfig {
        RollupConfig {
            limits: Limits {
                min_clients,
                max_apps,
                max_signatures,
            },
            ..config()
        }
    }

    /// A flood of made-up names, each from one client: none gets its own key, the index keeps the real
    /// app exact and sums the rest as `other`; the name stores stay within their caps.
    #[test]
    fn made_up_names_are_summed_as_other_and_real_apps_stay_exact() {
        let flood = 3_000;
        let mut tracker = Tracker::with_name_caps(20, 20);
        failing(&mut tracker, 1, "docker", 40, None);
        for i in 0..flood {
            failing(&mut tracker, 2, &format!("fake-{i}"), 3, Some("attacker"));
        }
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_100).expect("now");
        let config = bounded(3, 10, 10);
        let (values, report) = rollup_with_report(&tracker, now, &config);
        // 2 windows x (global, repo, type, docker, index) + signatures.new.
        assert_eq!(values.len(), 11, "{:?}", values.keys().collect::<Vec<_>>());
        let docker: GroupStats = serde_json::from_slice(&values["1h.app.docker"]).expect("json");
        assert_eq!((docker.started, docker.failed), (40, 40));
        // Distinct clients are counted by an 8-bit hash: a lower bound, exact for a few.
        assert!(docker.clients.is_some_and(|c| (30..=40).contains(&c)));
        let global: GroupStats = serde_json::from_slice(&values["1h.global"]).expect("json");
        assert_eq!(global.started, 40 + 3 * flood);
        let index: AppsIndex = serde_json::from_slice(&values["24h.apps"]).expect("json");
        assert_eq!(index.apps.len(), 1);
        let other = index.other.expect("other");
        assert_eq!((other.names, other.started), (flood, 3 * flood));
        assert_eq!(
            (report.apps.distinct, report.apps.tracked),
            (flood as usize + 1, 1)
        );
        // Top lists name tracked signatures only: docker's, then at most 9 of the flood's.
        assert!(global.top_signatures.len() <= 3);
        assert!(tracker.apps.len() <= 20 && tracker.signatures.len() <= 20);
        tracker.keep_names(report);
        assert!(tracker.apps.len() <= 20, "{}", tracker.apps.len());
        assert_eq!(
            tracker.apps.name(tracker.apps.hash("docker")),
            Some("docker")
        );
    }

    /// More qualified names than the cap: the most installed are tracked, the rest summed.
    #[test]
    fn at_most_the_cap_of_qualified_apps_is_tracked() {
        let mut tracker = Tracker::new();
        failing(&mut tracker, 1, "docker", 40, None);
        for i in 0..50 {
            failing(&mut tracker, 2, &format!("fake-{i}"), 6, None);
        }
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_100).expect("now");
        let (values, report) = rollup_with_report(&tracker, now, &bounded(3, 5, 5));
        let index: AppsIndex = serde_json::from_slice(&values["1h.apps"]).expect("json");
        assert_eq!(index.apps.len(), 5);
        assert_eq!(
            (index.apps[0].app.as_str(), index.apps[0].started),
            ("docker", 40)
        );
        assert_eq!(index.other.map(|o| (o.names, o.started)), Some((46, 276)));
        assert_eq!((report.apps.tracked, report.apps.capped), (5, 46));
        let app_keys = values.keys().filter(|k| k.starts_with("1h.app.")).count();
        assert_eq!(app_keys, 5);
        let global: GroupStats = serde_json::from_slice(&values["1h.global"]).expect("json");
        assert!(global.top_signatures.len() <= 3);
        // One client's installs never make an app: with 2 distinct clients required, none of these.
        let mut tracker = Tracker::new();
        failing(&mut tracker, 1, "lonely", 10, Some("one-host"));
        let (values, _) = rollup_with_report(&tracker, now, &bounded(2, 5, 5));
        assert!(!values.contains_key("1h.app.lonely"));
    }

    #[test]
    fn histogram_buckets_stay_within_three_percent() {
        for v in [0u32, 1, 63, 64, 65, 100, 1000, 3599, 86_400, u32::MAX / 2] {
            let back = histogram::value(histogram::bucket(v));
            let err = (f64::from(back) - f64::from(v)).abs() / f64::from(v.max(1));
            assert!(err <= 0.03, "{v} -> {back}");
        }
    }
}
