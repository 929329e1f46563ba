//! Sliding-window rollups as a pure function of the tracked installs and the time: for every window, the
//! global group and one group per repo, type and app, plus the per-app index and the new signatures.
//! The result is the full set of KV values (key → JSON bytes); the publisher sends the changed ones.
//!
//! An install belongs to a window when its first event is inside it; its counts follow its current state
//! (so a failure reported now for an install started 10 minutes ago counts in the 1 h window).

use std::collections::{BTreeMap, HashMap};

use schema::span::Span;
use schema::stats::{
    apps_key, group_key, AppSummary, AppsIndex, CategoryCount, ExitCodeCount, GroupStats,
    NameCount, NewSignature, NewSignatures, Scope, SignatureCount, KEY_NEW_SIGNATURES,
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
}

impl Acc {
    fn add(&mut self, s: &Slot) {
        self.started += 1;
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
        if s.signature != 0 {
            *self.signatures.entry(s.signature).or_default() += 1;
        }
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
                    signature: tracker.signatures.name(id).to_string(),
                    count,
                })
                .collect(),
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
    apps: Vec<Option<Acc>>,
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
    recent: u64,
    apps: HashMap<u32, u64>,
}

/// Every KV value of one snapshot, by key.
pub fn rollup(
    tracker: &Tracker,
    now: OffsetDateTime,
    config: &RollupConfig,
) -> BTreeMap<String, Vec<u8>> {
    let now_secs = now.unix_timestamp();
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
        })
        .collect();
    let signature_from = now_secs - config.signature_window.secs() as i64;
    let mut signatures: HashMap<u32, SigAcc> = HashMap::new();
    let stuck = tracker.signatures.get(schema::stuck::STUCK_ERROR);

    for slot in tracker.slots() {
        let first = i64::from(slot.first_seen);
        for w in windows.iter_mut().rev() {
            if first < w.from {
                break;
            }
            w.global.add(slot);
            w.repos[repo_index(slot.repo)].add(slot);
            w.kinds[kind_index(slot.kind)].add(slot);
            let app = slot.app as usize;
            if w.apps.len() <= app {
                w.apps.resize_with(app + 1, || None);
            }
            w.apps[app].get_or_insert_with(Acc::default).add(slot);
        }
        if slot.signature != 0 && Some(slot.signature) != stuck && slot.status != Status::Success {
            let s = signatures.entry(slot.signature).or_insert(SigAcc {
                first_seen: slot.first_seen,
                ..SigAcc::default()
            });
            s.first_seen = s.first_seen.min(slot.first_seen);
            if first >= signature_from {
                s.recent += 1;
                *s.apps.entry(slot.app).or_default() += 1;
            }
        }
    }

    let mut out = BTreeMap::new();
    let mut put = |key: String, value: &dyn erased::Json| {
        out.insert(key, value.bytes());
    };
    let top_n = config.top_n;
    for w in &windows {
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
        let mut apps = Vec::new();
        for (id, acc) in w.apps.iter().enumerate() {
            let Some(acc) = acc else { continue };
            let name = tracker.apps.name(id as u32);
            put(
                group_key(span, Scope::App, name),
                &acc.stats(span, Scope::App, name, top_n, tracker),
            );
            apps.push(acc.summary(name));
        }
        apps.sort_by(|a, b| b.started.cmp(&a.started).then(a.app.cmp(&b.app)));
        put(
            apps_key(span),
            &AppsIndex {
                v: SNAPSHOT_VERSION,
                window: span.label(),
                window_secs: span.secs(),
                apps,
            },
        );
    }

    let mut fresh: Vec<NewSignature> = signatures
        .into_iter()
        .filter(|(_, s)| s.recent > 0 && i64::from(s.first_seen) >= signature_from)
        .map(|(id, s)| NewSignature {
            signature: tracker.signatures.name(id).to_string(),
            installs: s.recent,
            first_seen: OffsetDateTime::from_unix_timestamp(i64::from(s.first_seen)).unwrap_or(now),
            apps: top(&s.apps, MAX_SIGNATURE_APPS)
                .into_iter()
                .map(|(app, count)| NameCount {
                    name: tracker.apps.name(app).to_string(),
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
    out
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

    #[test]
    fn histogram_buckets_stay_within_three_percent() {
        for v in [0u32, 1, 63, 64, 65, 100, 1000, 3599, 86_400, u32::MAX / 2] {
            let back = histogram::value(histogram::bucket(v));
            let err = (f64::from(back) - f64::from(v)).abs() / f64::from(v.max(1));
            assert!(err <= 0.03, "{v} -> {back}");
        }
    }
}
