//! The loss check of the fleet, behind `telemetry-verify`: what the edge acknowledged (the `--record`
//! file of `telemetry-simulate`, [`crate::record`]) against what ClickHouse and PocketBase hold. An event is keyed by its install
//! and its place in the install (installing, validation, configuring, final), which is what the edge's
//! de-duplication id (`<execution_id>:<status>`) stands for: every acknowledged key must be stored, each
//! key at most once (one distinct `event_id`), and every acknowledged install must have exactly one row
//! in `installs_final` and one PocketBase record. An event that was stored although its client never
//! saw a 2xx (the edge died between the broker's ack and the answer) is no loss; it is counted apart.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::record::{self, Reply};

/// The place of an event in its install: the edge keeps one event per place (its de-duplication id is
/// the install and the status as sent, and a script sends one final status per install).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    Installing,
    Validation,
    Configuring,
    Final,
}

impl Slot {
    /// The slot of a stored status; every final status (success, failed, aborted, unknown) is `Final`,
    /// whatever the edge reclassified it to.
    pub fn of(status: &str) -> Slot {
        match status {
            "installing" => Slot::Installing,
            "validation" => Slot::Validation,
            "configuring" => Slot::Configuring,
            _ => Slot::Final,
        }
    }
}

/// One event's key: its install and its slot.
pub type Key = (String, Slot);

/// What the client saw for one key over all its attempts.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Some attempt got a 202 (accepted or duplicate).
    pub acked: bool,
    /// The event ids of `accepted` answers: each of them must be the stored one.
    pub accepted_ids: BTreeSet<String>,
}

/// Every key the client sent, read from a `telemetry-simulate --record` file.
#[derive(Debug, Default)]
pub struct Ledger {
    pub keys: HashMap<Key, Seen>,
}

impl Ledger {
    pub fn read(path: &Path) -> anyhow::Result<Ledger> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("reading the record {}", path.display()))?;
        let answers = record::parse(std::io::BufReader::new(file))
            .with_context(|| format!("reading the record {}", path.display()))?;
        Ok(Ledger::of(answers))
    }

    /// A record's text (lines of [`record::Answer`]).
    pub fn parse(text: &str) -> anyhow::Result<Ledger> {
        Ok(Ledger::of(record::parse(text.as_bytes())?))
    }

    /// Every answer, keyed by install and slot.
    pub fn of(answers: impl IntoIterator<Item = record::Answer>) -> Ledger {
        let mut ledger = Ledger::default();
        for answer in answers {
            let seen = ledger
                .keys
                .entry((answer.execution_id, Slot::of(answer.status.as_str())))
                .or_default();
            match answer.reply {
                Reply::Accepted => {
                    seen.acked = true;
                    if let Some(id) = answer.event_id {
                        seen.accepted_ids.insert(id);
                    }
                }
                Reply::Duplicate => seen.acked = true,
                Reply::Status(_) | Reply::Transport => {}
            }
        }
        ledger
    }

    pub fn acked_events(&self) -> usize {
        self.keys.values().filter(|s| s.acked).count()
    }

    /// Installs with at least one acknowledged event.
    pub fn acked_installs(&self) -> BTreeSet<&str> {
        self.keys
            .iter()
            .filter(|(_, s)| s.acked)
            .map(|((id, _), _)| id.as_str())
            .collect()
    }

    /// Keys that were sent but never got a 2xx.
    pub fn unacked_events(&self) -> usize {
        self.keys.len() - self.acked_events()
    }
}

/// One line of the table: a store against the acknowledged events or installs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub what: String,
    /// Acknowledged events (or installs).
    pub acknowledged: u64,
    /// Of them, how many the store holds.
    pub stored: u64,
    /// Acknowledged and not in the store (or stored under another event id than the edge answered).
    pub lost: u64,
    /// Copies beyond the first: distinct event ids (or rows) more than one per key.
    pub doubled: u64,
    /// Keys in the store that never got a 2xx: the edge died between the broker's ack and its answer,
    /// or the client gave up. Not a loss.
    pub stored_without_ack: u64,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.doubled == 0
    }
}

/// Events: the ledger against the distinct event ids per key in a store (e.g. `events_final`).
pub fn compare_events(
    what: &str,
    ledger: &Ledger,
    stored: &HashMap<Key, BTreeSet<String>>,
) -> Comparison {
    let mut c = Comparison {
        what: what.to_string(),
        acknowledged: ledger.acked_events() as u64,
        ..Comparison::default()
    };
    for (key, seen) in &ledger.keys {
        if !seen.acked {
            continue;
        }
        match stored.get(key) {
            Some(ids) if seen.accepted_ids.iter().all(|id| ids.contains(id)) => c.stored += 1,
            _ => c.lost += 1,
        }
    }
    for (key, ids) in stored {
        c.doubled += ids.len().saturating_sub(1) as u64;
        if !ledger.keys.get(key).is_some_and(|s| s.acked) {
            c.stored_without_ack += 1;
        }
    }
    c
}

/// Installs: the acknowledged installs against rows (or records) per install id in a store.
pub fn compare_installs(what: &str, ledger: &Ledger, rows: &HashMap<String, u64>) -> Comparison {
    let acked = ledger.acked_installs();
    let mut c = Comparison {
        what: what.to_string(),
        acknowledged: acked.len() as u64,
        ..Comparison::default()
    };
    for id in &acked {
        if rows.get(*id).copied().unwrap_or(0) > 0 {
            c.stored += 1;
        } else {
            c.lost += 1;
        }
    }
    for (id, n) in rows {
        c.doubled += n.saturating_sub(1);
        if !acked.contains(id.as_str()) {
            c.stored_without_ack += 1;
        }
    }
    c
}

/// The whole check: one comparison per store and kind.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Comparison>,
    /// Keys sent that never got a 2xx (for the record; not a failure).
    pub unacked_events: u64,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.rows.iter().all(Comparison::passed)
    }

    pub fn lost(&self) -> u64 {
        self.rows.iter().map(|r| r.lost).sum()
    }

    /// The table the chaos run and the cluster test print.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<34} {:>12} {:>10} {:>6} {:>8} {:>20}",
            "store", "acknowledged", "stored", "lost", "doubled", "stored without an ack"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<34} {:>12} {:>10} {:>6} {:>8} {:>20}",
                r.what, r.acknowledged, r.stored, r.lost, r.doubled, r.stored_without_ack
            );
        }
        let _ = writeln!(
            out,
            "events sent that never got a 2xx: {}; result: {}",
            self.unacked_events,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        out
    }
}

/// A ClickHouse reachable over HTTP.
pub struct ClickHouse {
    pub http: reqwest::Client,
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl ClickHouse {
    async fn query(&self, sql: &str) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(&self.user, Some(&self.password))
            .body(sql.to_string())
            .send()
            .await
            .context("querying clickhouse")?;
        let status = resp.status();
        let body = resp.text().await.context("reading clickhouse's answer")?;
        if !status.is_success() {
            bail!("clickhouse answered {status}: {}", body.trim());
        }
        Ok(body)
    }

    /// Distinct event ids per key in `events_final`, synthetic events (the aggregator's timeouts) left
    /// out.
    pub async fn events(&self) -> anyhow::Result<HashMap<Key, BTreeSet<String>>> {
        let body = self
            .query(&format!(
                "SELECT execution_id, status, toString(event_id) FROM {}.events_final \
                 WHERE synthetic = 0 FORMAT TabSeparated",
                self.database
            ))
            .await?;
        let mut out: HashMap<Key, BTreeSet<String>> = HashMap::new();
        for line in body.lines() {
            let mut f = line.split('\t');
            let (Some(id), Some(status), Some(event_id)) = (f.next(), f.next(), f.next()) else {
                bail!("unexpected clickhouse row {line:?}");
            };
            out.entry((id.to_string(), Slot::of(status)))
                .or_default()
                .insert(event_id.to_string());
        }
        Ok(out)
    }

    /// Rows per install id in `installs_final`.
    pub async fn installs(&self) -> anyhow::Result<HashMap<String, u64>> {
        let body = self
            .query(&format!(
                "SELECT execution_id, count() FROM {}.installs_final GROUP BY execution_id \
                 FORMAT TabSeparated",
                self.database
            ))
            .await?;
        let mut out = HashMap::new();
        for line in body.lines() {
            let (id, n) = line
                .split_once('\t')
                .with_context(|| format!("unexpected clickhouse row {line:?}"))?;
            out.insert(id.to_string(), n.parse().context("row count")?);
        }
        Ok(out)
    }
}

/// A PocketBase reachable over HTTP, read as a superuser.
pub struct PocketBase {
    pub http: reqwest::Client,
    pub url: String,
    pub email: String,
    pub password: String,
    pub collection: String,
}

impl PocketBase {
    async fn token(&self) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!(
                "{}/api/collections/_superusers/auth-with-password",
                self.url.trim_end_matches('/')
            ))
            .json(&serde_json::json!({"identity": self.email, "password": self.password}))
            .send()
            .await
            .context("logging in to pocketbase")?;
        let status = resp.status();
        let body: Value = resp.json().await.context("reading pocketbase's answer")?;
        if !status.is_success() {
            bail!("pocketbase login answered {status}: {body}");
        }
        body["token"]
            .as_str()
            .map(str::to_owned)
            .context("pocketbase login without a token")
    }

    /// Records per install id in the collection.
    pub async fn records(&self) -> anyhow::Result<HashMap<String, u64>> {
        const PER_PAGE: usize = 500;
        let token = self.token().await?;
        let mut out: HashMap<String, u64> = HashMap::new();
        for page in 1.. {
            let resp = self
                .http
                .get(format!(
                    "{}/api/collections/{}/records?perPage={PER_PAGE}&page={page}&skipTotal=1&sort=id&fields=execution_id",
                    self.url.trim_end_matches('/'),
                    self.collection
                ))
                .header("Authorization", &token)
                .send()
                .await
                .context("listing pocketbase records")?;
            let status = resp.status();
            let body: Value = resp.json().await.context("reading pocketbase's answer")?;
            if !status.is_success() {
                bail!("pocketbase answered {status}: {body}");
            }
            let items = body["items"].as_array().cloned().unwrap_or_default();
            for item in &items {
                let id = item["execution_id"].as_str().unwrap_or_default();
                *out.entry(id.to_string()).or_default() += 1;
            }
            if items.len() < PER_PAGE {
                break;
            }
        }
        Ok(out)
    }
}

/// Reads every store once and compares it with the ledger.
pub async fn check(
    ledger: &Ledger,
    clickhouse: &ClickHouse,
    pocketbase: Option<&PocketBase>,
) -> anyhow::Result<Report> {
    let mut report = Report {
        unacked_events: ledger.unacked_events() as u64,
        ..Report::default()
    };
    report.rows.push(compare_events(
        "events: clickhouse events_final",
        ledger,
        &clickhouse.events().await?,
    ));
    report.rows.push(compare_installs(
        "installs: clickhouse installs_final",
        ledger,
        &clickhouse.installs().await?,
    ));
    if let Some(pb) = pocketbase {
        report.rows.push(compare_installs(
            "installs: pocketbase records",
            ledger,
            &pb.records().await?,
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rows: &[(&str, &str, &str)]) -> HashMap<Key, BTreeSet<String>> {
        let mut out: HashMap<Key, BTreeSet<String>> = HashMap::new();
        for (id, status, event) in rows {
            out.entry((id.to_string(), Slot::of(status)))
                .or_default()
                .insert(event.to_string());
        }
        out
    }

    const RECORD: &str = "a\tinstalling\taccepted\te1\n\
                          a\tinstalling\tduplicate\t-\n\
                          a\taborted\t503\t-\n\
                          a\taborted\taccepted\te2\n\
                          b\tinstalling\ttransport\t-\n\
                          c\tsuccess\tduplicate\t-\n";

    #[test]
    fn the_ledger_keys_events_by_install_and_slot() {
        let ledger = Ledger::parse(RECORD).expect("parse");
        assert_eq!(ledger.keys.len(), 4);
        assert_eq!(ledger.acked_events(), 3);
        assert_eq!(ledger.unacked_events(), 1);
        assert_eq!(
            ledger.acked_installs().into_iter().collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert!(Ledger::parse("a\tinstalling\n").is_err());
    }

    #[test]
    fn events_are_compared_by_key_and_accepted_id() {
        let ledger = Ledger::parse(RECORD).expect("parse");
        let check = |rows: &[(&str, &str, &str)], lost, doubled, without_ack| {
            let c = compare_events("events", &ledger, &stored(rows));
            assert_eq!(
                (c.lost, c.doubled, c.stored_without_ack),
                (lost, doubled, without_ack),
                "{rows:?}"
            );
            assert_eq!(c.acknowledged, 3);
            assert_eq!(c.stored, 3 - lost);
        };
        // Every acknowledged key once; the edge reclassified a's final (sent as failed) to aborted.
        check(
            &[
                ("a", "installing", "e1"),
                ("a", "aborted", "e2"),
                ("c", "success", "x"),
            ],
            0,
            0,
            0,
        );
        // c missing.
        check(
            &[("a", "installing", "e1"), ("a", "aborted", "e2")],
            1,
            0,
            0,
        );
        // a's final stored under another id than the edge answered: lost, and not doubled.
        check(
            &[
                ("a", "installing", "e1"),
                ("a", "aborted", "e9"),
                ("c", "success", "x"),
            ],
            1,
            0,
            0,
        );
        // a's installing twice.
        check(
            &[
                ("a", "installing", "e1"),
                ("a", "installing", "e7"),
                ("a", "aborted", "e2"),
                ("c", "failed", "x"),
            ],
            0,
            1,
            0,
        );
        // b was stored although its client saw no 2xx: not a loss.
        check(
            &[
                ("a", "installing", "e1"),
                ("a", "aborted", "e2"),
                ("c", "success", "x"),
                ("b", "installing", "y"),
            ],
            0,
            0,
            1,
        );
    }

    #[test]
    fn installs_are_compared_by_rows_per_install() {
        let ledger = Ledger::parse(RECORD).expect("parse");
        let rows = |r: &[(&str, u64)]| r.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let c = compare_installs("installs", &ledger, &rows(&[("a", 1), ("c", 1)]));
        assert!(c.passed());
        assert_eq!((c.acknowledged, c.stored), (2, 2));
        let c = compare_installs("installs", &ledger, &rows(&[("a", 2), ("b", 1)]));
        assert_eq!((c.lost, c.doubled, c.stored_without_ack), (1, 1, 1));
        assert!(!c.passed());
    }

    #[test]
    fn the_table_says_fail_on_any_loss_or_double() {
        let ok = Comparison {
            what: "x".into(),
            acknowledged: 2,
            stored: 2,
            ..Comparison::default()
        };
        let report = Report {
            rows: vec![ok.clone()],
            unacked_events: 0,
        };
        assert!(report.passed() && report.table().contains("PASS"));
        let report = Report {
            rows: vec![
                ok,
                Comparison {
                    doubled: 1,
                    ..Comparison::default()
                },
            ],
            unacked_events: 0,
        };
        assert!(!report.passed() && report.table().contains("FAIL"));
    }
}
