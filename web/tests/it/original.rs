//! The running service's read API, checked against its own description: `tests/fixtures/original-api.md`
//! (a copy of the spec the fleet replaces) is parsed — the key tables, the `{…}` key lists, the record
//! list, the defaults and the leniency rules — and every expectation here is built from it. The answers
//! come from the seeded stack (`harness`), whose exact figures the test knows.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use regex::Regex;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Stack, HOSTILE};

const SPEC: &str = include_str!("../fixtures/original-api.md");

/// What a key holds.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Int,
    Float,
    /// A list of objects with these keys.
    Objects(Vec<String>),
    /// A list of records.
    Records,
    /// Only its presence is specified.
    Any,
}

/// What the spec says.
#[derive(Debug)]
struct Spec {
    /// Route path → its keys.
    routes: BTreeMap<String, Vec<(String, Ty)>>,
    record: Vec<String>,
    /// Route name (`dashboard`, `records`, `errors`) → default days.
    days_default: HashMap<String, i64>,
    negative_to: i64,
    over: i64,
    zero_or_over_to: i64,
    limit: (i64, i64, i64),
    sorts: Vec<String>,
    sort_unknown: String,
    repo_default: String,
}

/// Splits `text` at commas outside brackets and parentheses.
fn top_level(text: &str) -> Vec<String> {
    let (mut out, mut depth, mut cur) = (Vec::new(), 0i32, String::new());
    for c in text.chars() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn keys_in_braces(text: &str) -> Vec<String> {
    let inner = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}');
    top_level(inner)
}

fn ty(cell: &str) -> Ty {
    let cell = cell.trim();
    match cell {
        "int" => Ty::Int,
        "float" => Ty::Float,
        "[record]" => Ty::Records,
        c if c.starts_with("[{") => Ty::Objects(keys_in_braces(c)),
        _ => Ty::Any,
    }
}

/// `name` or `name[{a, b}]` of a `{…}` key list.
fn brace_item(item: &str) -> (String, Ty) {
    match item.split_once('[') {
        Some((name, rest)) => (
            name.trim().to_string(),
            Ty::Objects(keys_in_braces(&format!("[{rest}"))),
        ),
        None => (item.trim().to_string(), Ty::Any),
    }
}

/// The balanced `{…}` after the first "`{" of `text`.
fn first_brace_list(text: &str) -> Option<String> {
    let start = text.find("`{")? + 1;
    let mut depth = 0;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(text[start + 1..start + i].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

fn capture(re: &str, text: &str) -> Vec<String> {
    let caps = Regex::new(re)
        .expect("regex")
        .captures(text)
        .unwrap_or_else(|| panic!("the spec has no {re}"));
    caps.iter()
        .skip(1)
        .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default())
        .collect()
}

impl Spec {
    fn parse(text: &str) -> Spec {
        // Sections by their `## GET /path` heading.
        let mut sections: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("## ") {
                let route = rest
                    .strip_prefix("GET ")
                    .map(|r| r.split(['?', ' ']).next().unwrap_or("").to_string())
                    .unwrap_or_else(|| rest.to_string());
                sections.push((route, String::new()));
            } else if let Some((_, body)) = sections.last_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        let mut routes = BTreeMap::new();
        let mut record = Vec::new();
        for (route, body) in &sections {
            if !route.starts_with("/api/") {
                continue;
            }
            let mut fields = Vec::new();
            let mut in_key_table = false;
            for line in body.lines() {
                if line.starts_with("| key | type |") {
                    in_key_table = true;
                    continue;
                }
                if !line.starts_with('|') {
                    in_key_table = false;
                    continue;
                }
                if !in_key_table || line.starts_with("|---") {
                    continue;
                }
                let cells: Vec<&str> = line.split('|').collect();
                let t = ty(cells[2]);
                for key in cells[1].split(',') {
                    fields.push((key.trim().to_string(), t.clone()));
                }
            }
            if fields.is_empty() {
                if let Some(list) = first_brace_list(body) {
                    fields = top_level(&list).iter().map(|i| brace_item(i)).collect();
                }
            }
            if let Some(start) = body.find("Record (") {
                let after = &body[start..];
                let list = &after[after.find("):").expect("record list") + 2..];
                let list = &list[..list.find(". ").expect("end of the record list")];
                record = top_level(&list.replace('\n', " "))
                    .into_iter()
                    .map(|k| k.split_whitespace().next().unwrap_or("").to_string())
                    .collect();
            }
            routes.insert(route.clone(), fields);
        }
        let common = text.replace('\n', " ");
        let defaults = capture(r"`days` defaults to ([^;]+);", &common)[0].clone();
        let mut days_default = HashMap::new();
        for caps in Regex::new(r"(\d+) \(([^)]+)\)")
            .expect("regex")
            .captures_iter(&defaults)
        {
            for name in caps[2].split(',') {
                days_default.insert(name.trim().to_string(), caps[1].parse().expect("days"));
            }
        }
        let negative_to = capture(r"negative → (\d+)", &common)[0].parse().expect("n");
        let over = capture(r"0 or > (\d+) → (\d+)", &common);
        let limit = capture(r"`limit` (\d+)\.\.(\d+), clamped, default (\d+)", &common);
        let sorts = capture(
            r"`sort` is one of ([a-z_, ]+?) with an optional leading `-`",
            &common,
        )[0]
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
        Spec {
            routes,
            record,
            days_default,
            negative_to,
            over: over[0].parse().expect("n"),
            zero_or_over_to: over[1].parse().expect("n"),
            limit: (
                limit[0].parse().expect("n"),
                limit[1].parse().expect("n"),
                limit[2].parse().expect("n"),
            ),
            sorts,
            sort_unknown: capture(r"unknown → `(-?[a-z_]+)`", &common)[0].clone(),
            repo_default: capture(r"`repo` defaults to `([A-Za-z]+)`", &common)[0].clone(),
        }
    }

    /// The days a route answers for `days=input`, by the spec's rules.
    fn days(&self, route: &str, input: Option<&str>) -> i64 {
        let default = self.days_default[route];
        match input.and_then(|t| t.parse::<i64>().ok()) {
            None => default,
            Some(n) if n < 0 => self.negative_to,
            Some(n) if n == 0 || n > self.over => self.zero_or_over_to,
            Some(n) => n,
        }
    }

    fn keys(&self, route: &str) -> &[(String, Ty)] {
        self.routes
            .get(route)
            .unwrap_or_else(|| panic!("the spec has no {route}"))
    }
}

fn check_record(record: &Value, keys: &[String], ctx: &str) {
    let created = Regex::new(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$").expect("regex");
    let public = Regex::new(r"^\d{8}-[0-9a-f]{16}$").expect("regex");
    for key in keys {
        assert!(
            record.get(key).is_some(),
            "{ctx}: record without {key}: {record}"
        );
    }
    let text = |k: &str| record[k].as_str().unwrap_or("").to_string();
    assert!(created.is_match(&text("created")), "{ctx}: {record}");
    assert!(public.is_match(&text("execution_id")), "{ctx}: {record}");
}

/// Every key of `route` with its type; lists of objects non-empty unless `may_be_empty`.
fn check_shape(spec: &Spec, route: &str, body: &Value, may_be_empty: &[&str]) {
    for (key, t) in spec.keys(route) {
        let v = body
            .get(key)
            .unwrap_or_else(|| panic!("{route}: no key {key} in {body}"));
        let ctx = format!("{route}.{key}");
        match t {
            Ty::Int => assert!(v.is_i64() || v.is_u64(), "{ctx} is not an int: {v}"),
            Ty::Float => assert!(v.is_number(), "{ctx} is not a number: {v}"),
            Ty::Any => {}
            Ty::Records | Ty::Objects(_) => {
                let items = v
                    .as_array()
                    .unwrap_or_else(|| panic!("{ctx} is not a list"));
                assert!(
                    !items.is_empty() || may_be_empty.contains(&key.as_str()),
                    "{ctx} is empty"
                );
                for item in items {
                    match t {
                        Ty::Records => check_record(item, &spec.record, &ctx),
                        Ty::Objects(keys) => {
                            for k in keys {
                                assert!(item.get(k).is_some(), "{ctx}: no {k} in {item}");
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Midnight UTC `days − 1` days ago.
fn since(days: i64) -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    now - now.rem_euclid(86_400) - (days - 1) * 86_400
}

#[test]
fn the_spec_parses_into_what_the_checks_need() {
    let spec = Spec::parse(SPEC);
    assert_eq!(spec.days_default["dashboard"], 1);
    assert_eq!(spec.days_default["records"], 1);
    assert_eq!(spec.days_default["errors"], 7);
    assert_eq!(
        (spec.negative_to, spec.over, spec.zero_or_over_to),
        (1, 365, 365)
    );
    assert_eq!(spec.limit, (1, 100, 50));
    assert_eq!(spec.sorts.len(), 7);
    assert_eq!(spec.sort_unknown, "-created");
    assert_eq!(spec.repo_default, "ProxmoxVE");
    assert_eq!(spec.record.len(), 26, "{:?}", spec.record);
    assert_eq!(spec.keys("/api/dashboard").len(), 25);
    assert!(spec
        .keys("/api/records")
        .iter()
        .any(|(k, _)| k == "total_pages"));
    let errors = spec.keys("/api/errors");
    assert!(errors.contains(&(
        "error_timeline".to_string(),
        Ty::Objects(vec!["date".into(), "failed".into(), "aborted".into()])
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_read_api_answers_as_its_spec_says() {
    let spec = Spec::parse(SPEC);
    let stack = Stack::seeded().await;
    let web = stack.web(|c| c.metrics_refresh_secs = 1).await;
    let direct = |days: i64, repo: &str| {
        stack.count(&format!(
            "SELECT count() FROM telemetry.installs_final WHERE started_at >= toDateTime({}) \
             AND ('{repo}' = '' OR repo_source = '{repo}')",
            since(days)
        ))
    };

    // Shapes: every key with its type, on a period where the seeds fill the lists.
    let d = web.json("/api/dashboard?days=90&repo=all").await;
    check_shape(
        &spec,
        "/api/dashboard",
        &d,
        &["failed_apps", "top_addons", "repo_slugs"],
    );
    let e = web.json("/api/errors?days=90&repo=all").await;
    check_shape(&spec, "/api/errors", &e, &[]);
    let r = web.json("/api/records?days=90&repo=all").await;
    check_shape(&spec, "/api/records", &r, &[]);

    // Exact figures of the seeds (ProxmoxVE: docker 8 success, 4 failed, 2 exit 130; the hostile app 6
    // failed; jellyfin 2 installing, 1 unknown; 8 more installs in other repos).
    let d = web.json("/api/dashboard?days=90").await;
    let figures = [
        "total_installs",
        "total_all_time",
        "success_count",
        "failed_count",
        "aborted_count",
        "installing_count",
    ]
    .map(|k| u(&d[k]));
    assert_eq!(figures, [23, 23, 8, 10, 2, 2], "{d}");
    assert_eq!(d["success_rate"].as_f64(), Some(44.44));
    let top: Vec<(&str, u64)> = d["top_apps"]
        .as_array()
        .expect("top")
        .iter()
        .map(|a| (a["app"].as_str().expect("app"), u(&a["count"])))
        .collect();
    assert_eq!(top, [("docker", 14), (HOSTILE, 6), ("jellyfin", 3)]);
    assert_eq!(d["daily_stats"].as_array().expect("daily").len(), 90);
    let all = web.json("/api/dashboard?days=90&repo=all").await;
    assert_eq!(
        (u(&all["total_installs"]), all["success_rate"].as_f64()),
        (31, Some(50.0))
    );
    let other = web.json("/api/dashboard?days=90&repo=other").await;
    assert_eq!(u(&other["total_installs"]), 0);
    let empty_slug = web.json("/api/dashboard?days=90&slug=").await;
    assert_eq!(u(&empty_slug["total_installs"]), 23);
    let some_slug = web.json("/api/dashboard?days=90&slug=someuser/fork").await;
    assert_eq!(u(&some_slug["total_installs"]), 0);
    let e = web.json("/api/errors?days=90").await;
    assert_eq!(
        (
            u(&e["total_installs"]),
            u(&e["total_errors"]),
            u(&e["stuck_installing"])
        ),
        (23, 12, 2)
    );
    assert_eq!(e["overall_fail_rate"].as_f64(), Some(52.17));
    // The aborted rule: the failures with exit 130 are the aborted ones.
    let aborted = web
        .json("/api/records?days=90&status=aborted&limit=100")
        .await;
    assert_eq!(u(&aborted["total"]), 2);
    for r in aborted["records"].as_array().expect("records") {
        assert_eq!(
            (r["nsapp"].as_str(), u(&r["exit_code"])),
            (Some("docker"), 130)
        );
    }

    // Defaults and leniency of `days`, from the spec's rules; nothing answers 400.
    for input in [
        None,
        Some("0"),
        Some("-3"),
        Some("14"),
        Some("400"),
        Some("abc"),
    ] {
        let q = input.map_or(String::new(), |d| format!("days={d}"));
        let d = web.json(&format!("/api/dashboard?{q}")).await;
        let days = spec.days("dashboard", input);
        assert_eq!(
            d["daily_stats"].as_array().expect("daily").len() as i64,
            days,
            "dashboard {q}"
        );
        assert_eq!(
            u(&d["total_installs"]),
            direct(days, &spec.repo_default),
            "dashboard {q}"
        );
        let e = web.json(&format!("/api/errors?{q}")).await;
        let days = spec.days("errors", input);
        assert_eq!(
            e["error_timeline"].as_array().expect("timeline").len() as i64,
            days,
            "errors {q}"
        );
        let r = web.json(&format!("/api/records?{q}")).await;
        let days = spec.days("records", input);
        assert_eq!(
            u(&r["total"]),
            direct(days, &spec.repo_default),
            "records {q}"
        );
    }

    // `limit`: clamped into the spec's range, its default when unparseable.
    let (min, max, default) = spec.limit;
    for (input, expected) in [("0", min), ("200", max), ("abc", default), ("7", 7)] {
        let r = web
            .json(&format!("/api/records?days=90&repo=all&limit={input}"))
            .await;
        assert_eq!(u(&r["limit"]) as i64, expected, "limit={input}");
        let rows = r["records"].as_array().expect("records").len() as i64;
        assert_eq!(rows, expected.min(31), "limit={input}");
        assert_eq!(u(&r["total"]), 31);
        assert_eq!(u(&r["total_pages"]) as i64, (31 + expected - 1) / expected);
    }

    // `sort`: each spec column ascending and descending; an unknown one is the spec's default.
    let order = |sort: &str| {
        let web = &web;
        let sort = sort.to_string();
        async move {
            let r = web
                .json(&format!(
                    "/api/records?days=90&repo=all&limit=100&sort={sort}"
                ))
                .await;
            r["records"].as_array().expect("records").clone()
        }
    };
    let created = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["created"].as_str().expect("created").to_string())
            .collect()
    };
    let newest_first = order("-created").await;
    let dates = created(&newest_first);
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted);
    assert_eq!(order(&spec.sort_unknown).await, newest_first);
    assert_eq!(order("bogus").await, newest_first);
    // Every spec column sorts, both ways (numbers as numbers, text bytewise as ClickHouse does).
    let sort_key = |v: &Value| {
        (
            v.as_i64().unwrap_or(0),
            v.as_str().unwrap_or("").to_string(),
        )
    };
    for column in &spec.sorts {
        for descending in [false, true] {
            let sort = format!("{}{column}", if descending { "-" } else { "" });
            let rows = order(&sort).await;
            assert_eq!(rows.len(), 31, "sort={sort}");
            let values: Vec<_> = rows.iter().map(|r| sort_key(&r[column.as_str()])).collect();
            let mut sorted = values.clone();
            sorted.sort();
            if descending {
                sorted.reverse();
            }
            assert_eq!(values, sorted, "sort={sort}");
        }
    }
    // Substring filters on nsapp.
    let r = web.json("/api/records?days=90&app=ock").await;
    assert_eq!(u(&r["total"]), 14);
    let r = web.json("/api/records?days=90&search=JELLY").await;
    assert_eq!(u(&r["total"]), 3);

    // Public ids only: no real id in any answer, and the hashed one leads to the install.
    let id = newest_first[0]["execution_id"]
        .as_str()
        .expect("id")
        .to_string();
    for path in [
        "/api/dashboard?days=90&repo=all",
        "/api/errors?days=90&repo=all",
        "/api/records?days=90&repo=all&limit=100",
        "/api/v2/dashboard?days=90",
        "/api/v2/errors?days=90",
        "/api/v2/records?days=90",
        "/api/v2/records.csv?days=90",
        "/api/records.csv?days=90",
        "/api/v2/apps/docker?days=90",
        "/dashboard/installs?days=90",
        "/dashboard?days=90",
        "/api/live",
    ] {
        let body = web.text(path).await;
        assert!(!body.contains("seed-0"), "{path} shows a real id");
    }
    let detail = web.json(&format!("/api/v2/records/{id}")).await;
    assert_eq!(detail["nsapp"], newest_first[0]["nsapp"]);
    assert!(!detail.to_string().contains("seed-0"), "{detail}");
    let page = web.text(&format!("/dashboard/installs/{id}")).await;
    assert!(!page.contains("seed-0"));
    let wrong = id.replace(&id[9..10], if &id[9..10] == "0" { "1" } else { "0" });
    assert_eq!(
        web.get(&format!("/api/v2/records/{wrong}")).await.status(),
        404
    );

    // Cache keys are the normalized parameters.
    let statuses = [
        "/api/dashboard?days=1&repo=ProxmoxVE",
        "/api/dashboard?repo=ProxmoxVE&days=1",
        "/api/dashboard?days=01&x=y",
    ];
    let mut seen = Vec::new();
    for path in statuses {
        let resp = web.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK);
        seen.push(
            resp.headers()["x-cache"]
                .to_str()
                .expect("header")
                .to_string(),
        );
    }
    assert_eq!(seen[1..], ["HIT", "HIT"], "{seen:?}");

    // /health and /healthz.
    for path in ["/health", "/healthz"] {
        let h = web.json(path).await;
        assert_eq!(h["status"], "ok");
        let time = h["time"].as_str().expect("time");
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{path}: {time}: {e}"));
    }

    // The install gauges of /metrics equal today's direct counts.
    let today = direct(1, "ProxmoxVE");
    testkit::poll_until("install gauges", Duration::from_secs(30), async || {
        let text = web.metrics().await;
        let names = [
            "telemetry_installs_total",
            "telemetry_installs_success_total",
            "telemetry_installs_failed_total",
            "telemetry_installs_aborted_total",
            "telemetry_installs_pending",
            "telemetry_success_rate",
        ];
        let all = names
            .iter()
            .all(|n| text.lines().any(|l| l.starts_with(&format!("{n} "))));
        all && text
            .lines()
            .any(|l| l == format!("telemetry_installs_total {today}"))
    })
    .await;
    web.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_stream_and_are_bounded() {
    const ROWS: u64 = 100_000;
    // The seeded stack: the writer has run its migrations and stored real installs beside the bulk.
    let stack = Stack::seeded().await;
    // Rows large enough (~400 bytes) that socket buffers cannot hold a whole export.
    let pad = "x".repeat(300);
    stack
        .clickhouse
        .query(&format!(
            "INSERT INTO telemetry.events (received_at, received_ms, execution_id, random_id, type, \
             nsapp, status, repo_source, synthetic) \
             SELECT now() - 60, toUInt64(toUInt32(now() - 60)) * 1000, concat('bulk-', toString(number)), \
             concat('bulk-', toString(number)), 'lxc', concat('app-{pad}-', toString(number % 7)), \
             'success', 'ProxmoxVE', 0 FROM system.numbers LIMIT {ROWS}"
        ))
        .expect("insert");
    let expected = stack.count(&format!(
        "SELECT count() FROM telemetry.installs_final WHERE started_at >= toDateTime({})",
        time::OffsetDateTime::now_utc().unix_timestamp() - 7 * 86_400
    ));
    assert!(expected > ROWS, "{expected}");
    let web = stack.web(|c| c.csv_max_rows = 2 * ROWS as u32).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(web.url(path)).send();
    // Two exports streaming (their bodies not read yet) hold both permits of the default of 2.
    let first = get("/api/records.csv?days=7").await.expect("first");
    assert_eq!(first.status(), 200);
    let second = get("/api/v2/records.csv?days=7").await.expect("second");
    assert_eq!(second.status(), 200);
    let refused = get("/api/records.csv?days=7").await.expect("third");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "busy");
    // The streamed bodies are the whole CSV.
    for resp in [first, second] {
        let text = resp.text().await.expect("body");
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, expected + 1);
        assert!(lines[0].starts_with("execution_id,"));
        assert!(
            !text.contains("bulk-") && !text.contains("seed-0"),
            "real ids in the CSV"
        );
    }
    // Both done: the permits are back.
    testkit::poll_until(
        "an export is accepted again",
        Duration::from_secs(20),
        async || {
            get("/api/records.csv?days=7&limit=1")
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    web.shutdown().await;
}
