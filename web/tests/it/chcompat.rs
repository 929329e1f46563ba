//! Same SQL, same answers on ClickHouse 18.16 and on a current ClickHouse. ClickHouse 18.16 runs with its
//! query log on; the real writer migrates it and stores a corpus with late and out-of-order events,
//! forged `random_id`s, second copies of events, every status, absent fields, several repos, slugs and
//! days; the web then answers every GET of its OpenAPI document, and the analysts' queries of
//! `docs/analysts.md` run as the read-only user, each checked for its answer against the installs
//! merged in Rust (`schema::merge`). `deploy/chcompat/compare.py` then replays what the writer ran
//! (schema statements in order, the stored rows) into chDB 26.9, the engine in-process, runs every
//! SELECT of the read-only user on both engines and compares the answers. The same script with one
//! event altered on the chDB side must fail, so the comparison is known to see a difference.
//!
//! chDB comes from PyPI (`chdb-core`) into the repo's `.tools/venv` (`deploy/local/lib.sh`,
//! `ensure_chdb`, run by `deploy/local/test`); `CHCOMPAT_PYTHON` names another interpreter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use testkit::clickhouse::{ClickHouseServer, READONLY_USER};
use testkit::{poll_until, NatsServer};
use time::OffsetDateTime;

use crate::harness::{accept, stop_writer, Stack};
use crate::openapi;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The interpreter with chDB: `CHCOMPAT_PYTHON`, else the repo's `.tools/venv`.
fn python() -> PathBuf {
    let python = std::env::var_os("CHCOMPAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/venv/bin/python"));
    let found = Command::new(&python)
        .args(["-c", "import chdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{} cannot import chdb: run deploy/local/test, or `source deploy/local/lib.sh && ensure_chdb`",
        python.display()
    );
    python
}

/// The extra installs of the corpus: (events in publishing order, second copies among them).
fn extras(now: i64) -> (Vec<schema::Accepted>, u64) {
    let day = 86_400;
    let mut out = Vec::new();
    let base = |id: &str, random_id: &str, status: &str| {
        json!({"random_id": random_id, "execution_id": id, "type": "lxc", "nsapp": "nextcloud",
               "status": status})
    };
    // Late: the final arrives three days after the start, published first (out of order).
    let mut start = base("late-1", "late-1", "installing");
    start["pve_version"] = json!("8.2.2");
    start["repo_source"] = json!("ProxmoxVED");
    start["repo_slug"] = json!("someone/fork");
    let mut end = base("late-1", "late-1", "success");
    end["install_duration"] = json!(400);
    out.push(accept(&end, now - 2 * day, 0));
    out.push(accept(&start, now - 5 * day, 0));
    // Out of order within minutes, with every intermediate status.
    for (n, status) in ["configuring", "validation", "installing"]
        .iter()
        .enumerate()
    {
        let mut e = base("ooo-1", "ooo-1", status);
        e["os_type"] = json!("debian");
        e["pve_version"] = json!("9.0.3");
        e["has_arm"] = json!(n == 0);
        e["arch"] = json!("amd64");
        out.push(accept(&e, now - 9 * day + 120 - n as i64 * 60, 0));
    }
    let mut aborted = base("ooo-1", "ooo-1", "aborted");
    aborted["exit_code"] = json!(130);
    out.push(accept(&aborted, now - 9 * day + 300, 0));
    // Forged: another random_id's failure after the owner's start; the owner's success counts.
    let mut owner = base("forged-1", "owner-1", "installing");
    owner["pve_version"] = json!("8.2.2");
    out.push(accept(&owner, now - 3 * day, 0));
    let mut forged = base("forged-1", "forger-1", "failed");
    forged["exit_code"] = json!(1);
    forged["error"] = json!("E: Unable to locate package forged");
    out.push(accept(&forged, now - 3 * day + 10, 0));
    let mut done = base("forged-1", "owner-1", "success");
    done["install_duration"] = json!(90);
    out.push(accept(&done, now - 3 * day + 90, 0));
    // A stuck install's timeout, with absent fields everywhere else.
    let stuck = json!({"random_id": "bare-1", "execution_id": "bare-1", "type": "vm", "nsapp": "bare",
                       "status": "unknown"});
    out.push(accept(&stuck, now - 40 * day, 0));
    // Failures on several days and an error signature shared by two apps.
    for n in 0..4 {
        let id = format!("fail-{n}");
        let mut e = base(&id, &id, "failed");
        e["nsapp"] = json!(if n % 2 == 0 {
            "nextcloud"
        } else {
            "vaultwarden"
        });
        e["exit_code"] = json!(100);
        e["error"] = json!("E: Unable to locate package libfoo");
        e["pve_version"] = json!("8.4.1");
        e["repo_slug"] = json!("community-scripts/ProxmoxVE");
        out.push(accept(&e, now - (n * 11 + 1) * day, 0));
    }
    // Second copies of two events under another message id: stored twice, counted once.
    let mut copies = 0;
    for i in [0, 5] {
        let mut again = out[i].clone();
        again.msg_id.push_str(":again");
        out.push(again);
        copies += 1;
    }
    (out, copies)
}

/// One install as `installs_final` shows it, merged in Rust.
struct Install {
    nsapp: String,
    status: &'static str,
    is_final: bool,
    exit_code: Option<u8>,
    error_category: Option<&'static str>,
    error_signature: Option<String>,
    started_at: i64,
    finished_at: Option<i64>,
    duration: Option<u32>,
    os_type: Option<String>,
    os_version: Option<String>,
    pve_version: Option<String>,
}

fn merged(events: &[schema::Accepted]) -> Vec<Install> {
    let mut by_id = BTreeMap::new();
    for a in events {
        by_id.insert(a.event.event_id, a.event.clone());
    }
    let mut states: BTreeMap<String, schema::merge::InstallState> = BTreeMap::new();
    for e in by_id.values() {
        let state = states.remove(&e.execution_id);
        states.insert(e.execution_id.clone(), schema::merge::merge(state, e));
    }
    states
        .values()
        .map(|s| {
            let outcome = s.outcome.as_ref();
            Install {
                nsapp: s.nsapp.value.clone(),
                status: s.status.value.as_str(),
                is_final: s.is_final(),
                exit_code: outcome.and_then(|o| o.exit_code),
                error_category: outcome.and_then(|o| o.error_category.map(|c| c.as_str())),
                error_signature: outcome.and_then(|o| by_id[&o.from].error_signature.clone()),
                started_at: s.first_seen.unix_timestamp(),
                finished_at: outcome.map(|o| o.at.unix_timestamp()),
                duration: s.duration_secs(),
                os_type: s.os_type.as_ref().map(|v| v.value.clone()),
                os_version: s.os_version.as_ref().map(|v| v.value.clone()),
                pve_version: s.pve_version.as_ref().map(|v| v.value.clone()),
            }
        })
        .collect()
}

/// The ```sql blocks of a Markdown file.
fn sql_blocks(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(path)).expect(path);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(q), "```") => {
                out.push(q.trim().to_string());
                current = None;
            }
            (Some(q), _) => {
                q.push_str(line);
                q.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

fn rate(part: usize, all: usize) -> String {
    let r = (part as f64 / all as f64 * 1000.0).round() / 1000.0;
    format!("{r}")
}

fn day_of(t: i64) -> time::Date {
    OffsetDateTime::from_unix_timestamp(t).expect("time").date()
}

/// Groups installs by `key` (rows in key order): key → installs.
fn groups<K: Ord>(
    installs: &[Install],
    key: impl Fn(&Install) -> Option<K>,
) -> BTreeMap<K, Vec<&Install>> {
    let mut out: BTreeMap<K, Vec<&Install>> = BTreeMap::new();
    for i in installs {
        if let Some(k) = key(i) {
            out.entry(k).or_default().push(i);
        }
    }
    out
}

/// The answer each documented query must give over `installs` at `now`, as TabSeparated rows (order
/// ignored: the engines' comparison checks the order). Keyed by the comment line opening the block.
fn expected(title: &str, installs: &[Install], now: i64) -> Vec<String> {
    let week_ago = now - 7 * 86_400;
    let recent = |i: &Install| i.finished_at.is_some_and(|f| f >= week_ago);
    let failed = |g: &[&Install]| g.iter().filter(|i| i.status == "failed").count();
    let or_null = |v: Option<String>| v.unwrap_or_else(|| "\\N".into());
    match title {
        "-- failure rate per app, last 7 days" => groups(installs, |i| {
            (i.is_final && recent(i)).then(|| i.nsapp.clone())
        })
        .into_iter()
        .map(|(app, g)| {
            let f = failed(&g);
            format!("{app}\t{}\t{f}\t{}", g.len(), rate(f, g.len()))
        })
        .collect(),
        "-- top exit codes per app" => groups(installs, |i| {
            (matches!(i.status, "failed" | "aborted") && i.exit_code.is_some()).then(|| {
                let category = or_null(i.error_category.map(str::to_string));
                (i.nsapp.clone(), i.exit_code.unwrap_or(0), category)
            })
        })
        .into_iter()
        .map(|((app, code, category), g)| format!("{app}\t{code}\t{category}\t{}", g.len()))
        .collect(),
        "-- OS distribution" => groups(installs, |i| {
            Some((
                i.os_type.clone().unwrap_or_else(|| "unknown".into()),
                i.os_version.clone().unwrap_or_default(),
            ))
        })
        .into_iter()
        .map(|((os, version), g)| format!("{os}\t{version}\t{}", g.len()))
        .collect(),
        "-- installs and success rate per day" => groups(installs, |i| Some(day_of(i.started_at)))
            .into_iter()
            .map(|(day, g)| {
                let ok = g.iter().filter(|i| i.status == "success").count();
                format!("{day}\t{}\t{}", g.len(), rate(ok, g.len()))
            })
            .collect(),
        "-- most frequent error signatures, last 7 days" => groups(installs, |i| {
            i.error_signature.clone().filter(|_| recent(i))
        })
        .into_iter()
        .map(|(signature, g)| format!("{signature}\t{}\t{}", g.len(), app_names(&g)))
        .collect(),
        "-- failure rate by app and week" => groups(installs, |i| {
            i.is_final.then(|| {
                let day = day_of(i.started_at);
                let monday =
                    day - time::Duration::days(day.weekday().number_days_from_monday().into());
                (monday, i.nsapp.clone())
            })
        })
        .into_iter()
        .map(|((week, app), g)| {
            let f = failed(&g);
            format!("{week}\t{app}\t{}\t{f}\t{}", g.len(), rate(f, g.len()))
        })
        .collect(),
        "-- top error signatures" => groups(installs, |i| i.error_signature.clone())
            .into_iter()
            .map(|(signature, g)| {
                let apps: BTreeSet<&str> = g.iter().map(|i| i.nsapp.as_str()).collect();
                format!(
                    "{signature}\t{}\t{}\t{}",
                    g.len(),
                    apps.len(),
                    app_names(&g)
                )
            })
            .collect(),
        "-- durations by PVE version" => groups(installs, |i| {
            (i.status == "success" && i.duration.is_some())
                .then(|| i.pve_version.clone().unwrap_or_else(|| "unknown".into()))
        })
        .into_iter()
        .map(|(pve, g)| {
            let d: Vec<u32> = g.iter().filter_map(|i| i.duration).collect();
            let avg = d.iter().map(|&x| f64::from(x)).sum::<f64>() / d.len() as f64;
            let (min, max) = (d.iter().min().unwrap(), d.iter().max().unwrap());
            format!(
                "{pve}\t{}\t{min}\t{max}\t{}",
                g.len(),
                (avg * 10.0).round() / 10.0
            )
        })
        .collect(),
        other => panic!("docs/analysts.md: no expected answer for the block {other:?}"),
    }
}

/// The sorted distinct apps of `installs` as a TabSeparated array (`['a','b']`, each string with its
/// quotes and backslashes escaped for the array, then for TabSeparated).
fn app_names(installs: &[&Install]) -> String {
    let apps: BTreeSet<&str> = installs.iter().map(|i| i.nsapp.as_str()).collect();
    let quoted: Vec<String> = apps
        .iter()
        .map(|a| format!("'{}'", a.replace('\\', "\\\\\\\\").replace('\'', "\\\\'")))
        .collect();
    format!("[{}]", quoted.join(","))
}

/// The rows of a TabSeparated answer, sorted.
fn answer_rows(text: &str) -> Vec<String> {
    let mut rows: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// Runs the writer's settle job once more over the stored corpus: once ClickHouse's clock is two seconds
/// past the last rows the writer inserted, a writer with a one-second interval and lag, until a statement
/// that moves data (`INSERT … SELECT`) it started has finished (its watermark is past every stored row)
/// and its rollup job has listed rollups of every pass; then stops it. Whatever it ran is in the query log, so the comparison
/// replays it.
async fn settle(stack: &Stack) {
    let number = |sql: &str| -> u64 {
        let text = stack
            .clickhouse
            .query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{sql}: {text:?}: {e}"))
    };
    stack
        .clickhouse
        .query("SYSTEM FLUSH LOGS")
        .expect("flush logs");
    let last_insert = number(
        "SELECT toUInt32(max(event_time)) FROM system.query_log WHERE type = 2 AND user = 'default' \
         AND match(query, '(?is)^\\\\s*INSERT\\\\s+INTO\\\\s+\\\\S+\\\\s*(\\\\([^)]*\\\\))?\\\\s*FORMAT')",
    );
    assert!(last_insert > 0, "the query log shows the writer's inserts");
    poll_until(
        "ClickHouse's clock two seconds past the last insert",
        Duration::from_secs(30),
        async || {
            let now = number("SELECT toUInt32(now())");
            if now >= last_insert + 2 {
                Ok(())
            } else {
                Err(format!("now {now}, last insert {last_insert}"))
            }
        },
    )
    .await;
    let started = number("SELECT toUInt32(now())");
    // It also takes the per-day rollups of the settled days, so that the web reads days from them and
    // both the rollups' statements and reads are compared.
    let process = stack.writer(&[
        ("--settle-interval-secs", "1"),
        ("--settle-lag-secs", "1"),
        ("--rollup-interval-secs", "1"),
        ("--ops-addr", "127.0.0.1:0"),
    ]);
    let moved = format!(
        "SELECT count() FROM system.query_log WHERE type = 2 AND user = 'default' \
         AND query_start_time >= toDateTime({}) AND match(query, '(?is)^\\\\s*INSERT\\\\s+INTO.*\\\\bSELECT\\\\b')",
        started
    );
    poll_until(
        "the settle job ran over the stored corpus",
        Duration::from_secs(120),
        async || {
            let _ = stack.clickhouse.query("SYSTEM FLUSH LOGS");
            match stack.clickhouse.query(&moved).map(|n| n.trim().to_string()) {
                Ok(n) if n != "0" => {}
                other => return Err(format!("{other:?}")),
            }
            if number("SELECT count() FROM telemetry.day_rollup_index")
                < schema::rollup::PASSES.len() as u64
            {
                return Err("no rollups taken yet".into());
            }
            Ok(())
        },
    )
    .await;
    stop_writer(process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_18_16_and_a_current_engine_answer_alike() {
    let python = python();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut events = openapi::events();
    let (extra, copies) = extras(now);
    let installs = crate::harness::seed_installs() + openapi::ADDONS as u64 + 8;
    events.extend(extra);
    let stack = Stack {
        clickhouse: ClickHouseServer::start_with_query_log().expect("clickhouse-server"),
        nats: NatsServer::start().expect("nats-server"),
    };
    stack
        .seed_expecting(&events, events.len() as u64 - copies, installs)
        .await;
    settle(&stack).await;

    // Every GET of the web's document, so the web runs every query it has.
    let web = stack.web(|_| {}).await;
    let listing = web.json("/api/v2/records?days=365&repo=all").await;
    let id = listing["records"][0]["execution_id"]
        .as_str()
        .expect("a record id")
        .to_string();
    let mut calls: Vec<String> = openapi::calls(&id)
        .into_iter()
        .map(|(_, url)| url)
        .collect();
    for app in ["nextcloud", "vaultwarden", "bare"] {
        calls.push(format!("/api/v2/apps/{app}?days=0&repo=all"));
    }
    calls.push("/api/v2/records?days=0&repo=all&slug=someone/fork".into());
    calls.push("/api/v2/records?days=30&repo=all&status=aborted&sort=duration".into());
    calls.push("/api/v2/errors?days=30&repo=ProxmoxVED".into());
    for url in &calls {
        let _ = web.get(url).await.text().await;
    }
    web.shutdown().await;

    // The analysts' queries as the read-only user: each answer checked; the README's are among them.
    let documented = sql_blocks("docs/analysts.md");
    for query in sql_blocks("writer/README.md") {
        assert!(
            documented.iter().any(|d| d.lines().skip(1).collect::<Vec<_>>() == query.lines().collect::<Vec<_>>()),
            "writer/README.md's query is not in docs/analysts.md (with its answer checked):\n{query}"
        );
    }
    let model = merged(&events);
    assert_eq!(model.len() as u64, installs);
    for query in &documented {
        let title = query.lines().next().expect("a line");
        let text = stack
            .clickhouse
            .query_as(READONLY_USER, query)
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        let mut want = expected(title, &model, now);
        want.sort();
        assert!(!want.is_empty(), "{title}: the corpus gives no rows");
        assert_eq!(answer_rows(&text), want, "{title}");
    }

    // chDB replays and compares (after the script's own rules pass their table); then again with one
    // event altered on its side, which must fail.
    let compare = |args: &[&str]| {
        let mut command = Command::new(&python);
        command
            .arg(root().join("deploy/chcompat/compare.py"))
            .args(args);
        let out = command.output().expect("compare.py");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (passed, report) = compare(&["--self-test"]);
    assert!(passed, "deploy/chcompat/compare.py --self-test:\n{report}");
    let url = stack.clickhouse.url();
    let (same, report) = compare(&["--clickhouse", &url]);
    assert!(same, "ClickHouse 18.16 and chDB differ:\n{report}");
    let compared: usize = report
        .split("compared ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count of compared queries");
    assert!(compared >= 40 + documented.len(), "{report}");
    let (same, report) = compare(&["--clickhouse", &url, "--plant"]);
    assert!(
        !same && report.contains("answers differ"),
        "a planted difference went unseen:\n{report}"
    );
}
