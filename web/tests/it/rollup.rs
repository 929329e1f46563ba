//! The per-day rollups of the dashboards' passes (schema version 6) change no answer: a web that reads
//! whole past days from them answers every view of both APIs exactly as one that reads every day from
//! `installs_final`, when the rollups are current, while late events are merged at read time, after
//! they are settled (the snapshots of their days out of date), and once the rollups are taken again. The
//! web with rollups must have read days from them for every pass, so the comparison is not vacuous.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use schema::rollup::{self, Changes, PASSES};
use serde_json::{json, Value};
use testkit::{poll_until, Process};
use time::OffsetDateTime;

use crate::harness::{accept, seed_events, stop_writer, Stack, Web};

/// A ClickHouse writer settling every `settle` seconds `lag` seconds behind, rolling up every `rollup`
/// seconds (0: never).
fn writer(stack: &Stack, settle: u64, lag: u64, rollup: u64) -> Process {
    stack.writer(&[
        ("--settle-interval-secs", &settle.to_string()),
        ("--settle-lag-secs", &lag.to_string()),
        ("--rollup-interval-secs", &rollup.to_string()),
    ])
}

/// The first day of an install merged at read time (`u32::MAX`: none).
fn fresh(stack: &Stack) -> u64 {
    stack.count(&rollup::FRESH_SQL.replace("?.", "telemetry."))
}

/// The days and spans of passes that have no snapshot at the current change count (empty: all rolled
/// up). The seeds reach 45 days back, so every pass has at least one complete span.
fn missing(stack: &Stack) -> Vec<String> {
    let now = stack.count("SELECT toUInt32(now())") as i64;
    let first = stack.count(
        "SELECT toUInt64(intDiv(toUInt32(min(started_at)), 86400)) FROM telemetry.installs_settled",
    ) as u32;
    let first = first - first % rollup::SPAN_DAYS;
    let blocks = stack
        .pairs("SELECT toString(low), toUInt64(sum(blocks)) FROM telemetry.settled_blocks GROUP BY low")
        .into_iter()
        .map(|(low, n)| (low.parse::<u32>().expect("day"), n))
        .collect();
    let changes = Changes::new(blocks);
    let listed: HashSet<String> = stack
        .pairs(
            "SELECT concat(pass, ' ', toString(day), ' ', toString(days), ' ', toString(changes)), \
             toUInt64(1) FROM telemetry.day_rollup_index",
        )
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut out = Vec::new();
    for pass in PASSES {
        let mut day = first;
        while rollup::complete(day, now) {
            let key = format!("{} {day} 1 {}", pass.name, changes.of(day));
            if !listed.contains(&key) {
                out.push(key);
            }
            day += 1;
        }
        let mut span = first;
        while rollup::complete(span + rollup::SPAN_DAYS - 1, now) {
            let last = span + rollup::SPAN_DAYS - 1;
            let key = format!(
                "{} {span} {} {}",
                pass.name,
                rollup::SPAN_DAYS,
                changes.of(last)
            );
            if !listed.contains(&key) {
                out.push(key);
            }
            span += rollup::SPAN_DAYS;
        }
    }
    out
}

/// Days read from rollups so far, per pass (the web's metric; the webs of one test process share their
/// recorder, and the one without rollup reads never counts).
async fn rolled_days(web: &Web) -> BTreeMap<String, u64> {
    let text = web.metrics().await;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("telemetry_web_rollup_days_total{pass=\"") else {
            continue;
        };
        let (pass, value) = rest.split_once("\"} ").expect("metric line");
        out.insert(
            pass.to_string(),
            value.trim().parse::<f64>().expect("value") as u64,
        );
    }
    out
}

/// Every view a pass answers, for each period and repo, both APIs and the scripts view.
fn paths() -> Vec<String> {
    let mut out = Vec::new();
    for days in ["today", "7", "30", "90", "365"] {
        for repo in ["all", "ProxmoxVE", "ProxmoxVED"] {
            out.push(format!("/api/v2/dashboard?days={days}&repo={repo}"));
            out.push(format!("/api/v2/errors?days={days}&repo={repo}"));
            out.push(format!("/api/v2/apps/docker?days={days}&repo={repo}"));
        }
    }
    for days in ["1", "7", "30", "90", "365"] {
        for repo in ["all", "ProxmoxVE", "ProxmoxVED"] {
            out.push(format!("/api/dashboard?days={days}&repo={repo}"));
            out.push(format!("/api/errors?days={days}&repo={repo}"));
            out.push(format!("/api/scripts?days={days}&repo={repo}"));
        }
    }
    out.push("/api/scripts?days=0&repo=all".into());
    out
}

/// `v` without the moment of the answer (`generated_at`, `since`, …): two webs answer a second apart.
fn steady(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !matches!(k.as_str(), "generated_at" | "since" | "until" | "now"));
            map.values_mut().for_each(steady);
        }
        Value::Array(items) => items.iter_mut().for_each(steady),
        _ => {}
    }
}

/// Both webs answer every path alike. A few paths at a time, both webs at once: the test runs alone
/// (`.config/nextest.toml`), and ClickHouse answers on both cores.
async fn same(with: &Web, without: &Web, when: &str) {
    use futures::StreamExt;
    let answers: Vec<(String, Value, Value)> = futures::stream::iter(paths())
        .map(|path| async move {
            let (a, b) = tokio::join!(with.json(&path), without.json(&path));
            (path, a, b)
        })
        .buffered(3)
        .collect()
        .await;
    for (path, mut a, mut b) in answers {
        steady(&mut a);
        steady(&mut b);
        assert_eq!(a, b, "{when}: {path}");
    }
}

/// Late events: a new install 20 days ago, and a first event three days before seed-005's start (the
/// install moves to an earlier day).
fn late(now: i64) -> Vec<schema::Accepted> {
    let day = 86_400;
    let install = |id: &str, status: &str| {
        json!({"random_id": id, "execution_id": id, "type": "lxc", "nsapp": "docker", "status": status,
               "os_type": "debian", "repo_source": "ProxmoxVE"})
    };
    let mut out = vec![
        accept(&install("late-new", "installing"), now - 20 * day, 0),
        accept(&install("late-new", "failed"), now - 20 * day + 90, 0),
    ];
    // seed-005 is docker's sixth install, 1 + 5 × 30 hours before the seeding.
    out.push(accept(
        &install("seed-005", "configuring"),
        now - 151 * 3600 - 3 * day,
        0,
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pass_answers_from_rollups_as_from_the_installs() {
    let stack = Stack::seeded().await;
    let seeded = seed_events().len() as u64;
    let with = stack
        .web(|c| {
            c.enable_cache = false;
        })
        .await;
    let without = stack
        .web(|c| {
            c.enable_cache = false;
            c.rollup_reads = false;
        })
        .await;
    let wait = Duration::from_secs(120);

    // Rolled up.
    let w = writer(&stack, 1, 1, 1);
    poll_until("every complete day rolled up", wait, async || {
        let left = missing(&stack);
        if fresh(&stack) == u64::from(u32::MAX) && left.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {left:?}"))
        }
    })
    .await;
    stop_writer(w).await;
    same(&with, &without, "rolled up").await;
    let used = rolled_days(&with).await;
    for pass in PASSES {
        assert!(
            used.get(pass.name).copied().unwrap_or(0) > 0,
            "{}: no day read from rollups: {used:?}",
            pass.name
        );
    }

    // Late events merged at read time: settled once at start, then only in an hour, an hour behind.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let events = late(now);
    let since = stack.count("SELECT toUInt64(toUInt32(now()))");
    stack.publish(&events).await;
    let w = writer(&stack, 3600, 3600, 0);
    let stored = seeded + events.len() as u64;
    // ClickHouse shows an insert's rows in `events` before its materialized view has recorded their
    // touches: wait for both, then the watermark must still be before the touches.
    let ids: BTreeSet<&str> = events
        .iter()
        .map(|a| a.event.execution_id.as_str())
        .collect();
    let listed = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let touched = format!(
        "SELECT toUInt64(uniqExact(execution_id)) FROM telemetry.install_touches \
         WHERE execution_id IN ({listed}) AND touched_at >= toDateTime({since})"
    );
    poll_until(
        "the late events and their touches stored",
        wait,
        async || {
            let n = stack.count("SELECT count() FROM telemetry.events_final");
            let t = stack.count(&touched);
            if n == stored && t == ids.len() as u64 {
                Ok(())
            } else {
                Err(format!(
                    "{n} of {stored} events, {t} of {} installs touched",
                    ids.len()
                ))
            }
        },
    )
    .await;
    assert!(
        fresh(&stack) < u64::from(u32::MAX),
        "the late events are merged at read time"
    );
    same(&with, &without, "merged at read time").await;
    stop_writer(w).await;

    // Settled: the snapshots of their days are out of date, the others still read.
    let before = rolled_days(&with).await;
    let w = writer(&stack, 1, 1, 0);
    poll_until("the late events settled", wait, async || {
        if fresh(&stack) == u64::from(u32::MAX) {
            Ok(())
        } else {
            Err("merged at read time".to_string())
        }
    })
    .await;
    stop_writer(w).await;
    assert!(!missing(&stack).is_empty(), "the late days are out of date");
    same(&with, &without, "settled, rollups out of date").await;
    assert!(
        rolled_days(&with).await.values().sum::<u64>() > before.values().sum::<u64>(),
        "the days before the late events still come from rollups"
    );
    let moved = stack.count(
        "SELECT toUInt64(toUInt32(started_at)) FROM telemetry.installs_final WHERE execution_id = 'seed-005'",
    ) as i64;
    assert!(moved < now - 151 * 3600 - 2 * 86_400, "seed-005 moved");

    // Rolled up again.
    let w = writer(&stack, 1, 1, 1);
    poll_until("rolled up again", wait, async || {
        let left = missing(&stack);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {left:?}"))
        }
    })
    .await;
    stop_writer(w).await;
    same(&with, &without, "rolled up again").await;
}
