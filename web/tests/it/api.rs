//! Route tests over seeded installs: every figure of the API equals a direct count in ClickHouse, bad
//! parameters are 400 JSON, every answer carries the security headers, stored strings are escaped, the
//! cache answers miss then hit, and the service shuts down within its deadline.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Stack, HOSTILE};

const FINAL_FAILURES: &str = "('failed', 'aborted', 'unknown')";

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// `[{name, count}]` of the API as pairs.
fn list(v: &Value) -> Vec<(String, u64)> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                u(&c["count"]),
            )
        })
        .collect()
}

fn sorted(mut pairs: Vec<(String, u64)>) -> Vec<(String, u64)> {
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_figure_equals_a_direct_count() {
    let stack = Stack::seeded().await;
    let web = stack.web(|_| {}).await;
    for days in ["today", "7", "30", "90", "365"] {
        for repo in ["all", "ProxmoxVE", "ProxmoxVED", "external"] {
            let d = web
                .json(&format!("/api/v2/dashboard?days={days}&repo={repo}"))
                .await;
            let since = u(&d["since"]["unix"]);
            let repo_sql = if repo == "all" {
                String::new()
            } else {
                format!(" AND repo_source = '{repo}'")
            };
            let filter = format!("started_at >= toDateTime({since}){repo_sql}");
            let count = |cond: &str| {
                stack.count(&format!(
                    "SELECT count() FROM telemetry.installs_final WHERE {filter} AND {cond}"
                ))
            };
            let ctx = format!("days={days} repo={repo}");
            assert_eq!(u(&d["total_installs"]), count("1"), "{ctx}");
            assert_eq!(u(&d["success_count"]), count("status = 'success'"), "{ctx}");
            assert_eq!(u(&d["failed_count"]), count("status = 'failed'"), "{ctx}");
            assert_eq!(u(&d["aborted_count"]), count("status = 'aborted'"), "{ctx}");
            assert_eq!(u(&d["unknown_count"]), count("status = 'unknown'"), "{ctx}");
            assert_eq!(u(&d["installing_count"]), count("is_final = 0"), "{ctx}");
            let group = |col: &str, cond: &str| {
                sorted(stack.pairs(&format!(
                    "SELECT {col} AS k, count() FROM telemetry.installs_final WHERE {filter} AND {cond} GROUP BY k"
                )))
            };
            assert_eq!(sorted(list(&d["top_apps"])), group("nsapp", "1"), "{ctx}");
            assert_eq!(
                sorted(list(&d["os_distribution"])),
                group("ifNull(os_type, 'unknown')", "1"),
                "{ctx}"
            );
            assert_eq!(
                sorted(list(&d["pve_versions"])),
                group("ifNull(pve_version, 'unknown')", "1"),
                "{ctx}"
            );
            assert_eq!(sorted(list(&d["type_stats"])), group("type", "1"), "{ctx}");
            assert_eq!(
                sorted(list(&d["method_stats"])),
                group("ifNull(method, 'unknown')", "1"),
                "{ctx}"
            );
            assert_eq!(
                sorted(list(&d["error_categories"])),
                group(
                    "ifNull(error_category, 'unknown')",
                    &format!("status IN {FINAL_FAILURES}")
                ),
                "{ctx}"
            );
            let daily: Vec<(String, u64)> = d["daily_stats"]
                .as_array()
                .expect("daily")
                .iter()
                .map(|s| {
                    (
                        s["date"].as_str().expect("date").to_string(),
                        u(&s["failed"]),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            assert_eq!(
                sorted(daily),
                group("toString(toDate(started_at))", "status = 'failed'"),
                "{ctx}"
            );
            let recent: Vec<String> = d["recent_records"]
                .as_array()
                .expect("recent")
                .iter()
                .map(|r| r["execution_id"].as_str().expect("id").to_string())
                .collect();
            let direct: Vec<String> = stack.public_ids(&format!(
                "SELECT execution_id, toUInt32(started_at) FROM telemetry.installs_final WHERE {filter} \
                 ORDER BY started_at DESC, execution_id LIMIT 10"
            ));
            assert_eq!(recent, direct, "{ctx}");
        }
    }
    // The seeded figures themselves, so that a view returning nothing cannot pass.
    let d = web.json("/api/v2/dashboard?days=90").await;
    assert_eq!(u(&d["total_installs"]), 31);
    assert_eq!(u(&d["installing_count"]), 2);
    let top = list(&d["top_apps"]);
    assert_eq!(top[0], ("docker".to_string(), 14));
    assert!(top.iter().any(|(n, c)| n == HOSTILE && *c == 6));
    // No app has the 50 installs a 90-day ranking needs.
    assert_eq!(d["failed_apps"].as_array().expect("failed apps").len(), 0);
    // docker: 4 failed (codes 100 and 6) of 8 success + 4 failed decided → 33.33 %; aborts are separate.
    let docker = web.json("/api/v2/apps/docker?days=90").await;
    assert_eq!(
        (
            u(&docker["failed_count"]),
            u(&docker["aborted_count"]),
            u(&docker["success_count"])
        ),
        (4, 2, 8)
    );
    assert_eq!(docker["failure_rate"], 33.33);
    web.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_app_views_equal_direct_counts() {
    let stack = Stack::seeded().await;
    let web = stack.web(|_| {}).await;
    let e = web.json("/api/v2/errors?days=90").await;
    let since = u(&e["since"]["unix"]);
    let filter = format!("started_at >= toDateTime({since})");
    let codes: Vec<(String, u64)> = e["exit_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|x| (x["code"].to_string(), u(&x["count"])))
        .collect();
    assert_eq!(
        sorted(codes),
        sorted(stack.pairs(&format!(
            "SELECT toString(exit_code) AS k, count() FROM telemetry.installs_final \
             WHERE {filter} AND status IN {FINAL_FAILURES} AND exit_code IS NOT NULL GROUP BY k"
        )))
    );
    let apt = e["exit_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .find(|x| x["code"] == 100)
        .expect("100");
    assert_eq!(
        apt["description"],
        schema::exit_codes::describe(100).as_ref()
    );
    let signatures: Vec<(String, u64)> = e["signatures"]
        .as_array()
        .expect("signatures")
        .iter()
        .map(|s| {
            (
                s["signature"].as_str().expect("sig").to_string(),
                u(&s["count"]),
            )
        })
        .collect();
    assert_eq!(
        sorted(signatures),
        sorted(stack.pairs(&format!(
            "SELECT error_signature AS k, count() FROM telemetry.installs_final \
             WHERE {filter} AND status IN {FINAL_FAILURES} AND error_signature IS NOT NULL GROUP BY k"
        )))
    );
    assert_eq!(
        u(&e["stuck_count"]),
        stack.count(&format!(
            "SELECT count() FROM telemetry.installs_final WHERE {filter} AND is_final = 0 \
             AND started_at < now() - 3600"
        ))
    );
    assert_eq!(
        u(&e["stuck_count"]),
        2,
        "the 4- and 30-hour-old jellyfin installs"
    );

    let path = format!(
        "/api/v2/apps/{}?days=90",
        web::params::encode_component(HOSTILE)
    );
    let a = web.json(&path).await;
    assert_eq!(a["nsapp"], HOSTILE);
    assert_eq!(
        u(&a["failed_count"]),
        stack.count(&format!(
            "SELECT count() FROM telemetry.installs_final WHERE {filter} AND nsapp = '{}' AND status = 'failed'",
            HOSTILE.replace('\'', "\\'")
        ))
    );
    assert_eq!(u(&a["failed_count"]), 6);
    let failures = a["recent_failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 6);
    let log = failures[0]["log_excerpt"].as_str().expect("excerpt");
    assert!(
        log.contains("192.x.x.x") && !log.contains("192.168.1.20"),
        "masked by ingest: {log}"
    );
    assert_eq!(failures[0]["exit_code"], 127);

    let id = failures[0]["execution_id"].as_str().expect("id");
    let detail = web.json(&format!("/api/records/{id}")).await;
    assert_eq!(detail["nsapp"], HOSTILE);
    assert_eq!(detail["events"].as_array().expect("events").len(), 2);
    assert_eq!(u(&detail["events_seen"]), 2);
    let missing = web.get("/api/records/no-such-install").await;
    assert_eq!(missing.status(), 404);
    web.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filters_sorts_pages_and_exports() {
    let stack = Stack::seeded().await;
    let web = stack.web(|_| {}).await;
    let page = web
        .json("/api/v2/records?days=365&app=docker&status=failed&sort=nsapp&order=asc&limit=2")
        .await;
    let direct = stack.count(
        "SELECT count() FROM telemetry.installs_final WHERE nsapp = 'docker' AND status = 'failed'",
    );
    assert_eq!(u(&page["total"]), direct);
    assert_eq!(direct, 4);
    assert_eq!(u(&page["pages"]), 2);
    assert_eq!(page["records"].as_array().expect("records").len(), 2);
    let second = web
        .json(
            "/api/v2/records?days=365&app=docker&status=failed&sort=nsapp&order=asc&limit=2&page=2",
        )
        .await;
    let ids = |p: &Value| -> Vec<String> {
        p["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r["execution_id"].as_str().expect("id").to_string())
            .collect()
    };
    let mut all = ids(&page);
    all.extend(ids(&second));
    let mut expected: Vec<String> = stack.public_ids(
        "SELECT execution_id, toUInt32(started_at) FROM telemetry.installs_final \
         WHERE nsapp = 'docker' AND status = 'failed' ORDER BY execution_id",
    );
    all.sort();
    expected.sort();
    assert_eq!(all, expected);
    let badge = &page["records"][0];
    assert!(
        badge["exit_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{badge}"
    );

    // Sorting by duration descending really sorts.
    let by_duration = web
        .json("/api/v2/records?days=365&sort=duration&order=desc&limit=500")
        .await;
    let durations: Vec<u64> = by_duration["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["duration"].as_u64())
        .collect();
    assert!(durations.windows(2).all(|w| w[0] >= w[1]), "{durations:?}");

    let csv = web
        .text(&format!(
            "/api/records.csv?days=365&app={}",
            web::params::encode_component(HOSTILE)
        ))
        .await;
    assert_eq!(csv.lines().count(), 1 + 6);
    assert!(csv.lines().nth(1).expect("row").contains(HOSTILE));

    let html = web
        .text("/dashboard/installs?days=365&sort=nsapp&order=asc")
        .await;
    assert!(crate::harness::shows_escaped(&html, HOSTILE));
    assert!(!html.contains(HOSTILE));
    assert!(
        html.contains("sort=nsapp&#38;order=desc"),
        "the current column links to the flipped order"
    );
    web.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_json_and_nothing_is_500() {
    let stack = Stack::seeded().await;
    let web = stack.web(|_| {}).await;
    let cases = [
        ("/api/v2/dashboard?days=8", "days"),
        ("/api/v2/dashboard?repo=github", "repo"),
        ("/api/v2/errors?days=-1", "days"),
        ("/api/v2/records?sort=error;DROP%20TABLE%20x", "sort"),
        ("/api/v2/records?order=up", "order"),
        ("/api/v2/records?page=0", "page"),
        ("/api/v2/records?limit=100000", "limit"),
        ("/api/v2/records?status=done", "status"),
        ("/api/v2/records?type=ct", "type"),
        ("/api/records.csv?page=abc", "page"),
        ("/api/records/bad%20id", "execution_id"),
        ("/api/v2/apps/%07bell", "nsapp"),
        ("/api/v2/apps/docker?days=x", "days"),
    ];
    for (path, field) in cases {
        let resp = web.get(path).await;
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"], "invalid_parameter", "{path}");
        assert_eq!(body["field"], field, "{path}");
    }
    let page = web.get("/dashboard?days=8").await;
    assert_eq!(page.status(), 400);
    assert!(page.text().await.expect("html").contains("days"));
    let unknown = web.get("/api/nothing").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.expect("json")["error"],
        "not_found"
    );
    let post = web
        .http
        .post(web.url("/api/v2/dashboard"))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 405, "no endpoint writes");
    web.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_is_ready_once_the_writer_reached_this_releases_schema() {
    let stack = Stack {
        clickhouse: testkit::clickhouse::ClickHouseServer::start().expect("clickhouse-server"),
        nats: testkit::NatsServer::start().expect("nats-server"),
    };
    let web = stack.web_started(|_| {}).await;
    let readyz = async || {
        let r = web.get("/readyz").await;
        (r.status().as_u16(), r.text().await.expect("body"))
    };
    let waiting = (
        503,
        "waiting for the writer's clickhouse migrations".to_string(),
    );
    // An empty database, then one a writer migrated to the version before this release's: not ready,
    // and it says why. The pages would read tables the last migration is still to build or replace.
    assert_eq!(readyz().await, waiting);
    let before = (schema::names::CLICKHOUSE_SCHEMA_VERSION - 1).to_string();
    stack
        .migrate(&[("--clickhouse-migrate-to", before.as_str())])
        .await;
    assert_eq!(
        stack.count("SELECT toUInt64(max(version)) FROM telemetry.schema_migrations"),
        u64::from(schema::names::CLICKHOUSE_SCHEMA_VERSION - 1)
    );
    assert_eq!(stack.count("SELECT count() FROM system.tables WHERE database = 'telemetry' AND name = 'installs_final'"), 1);
    assert_eq!(readyz().await, waiting);
    stack.migrate(&[]).await;
    assert_eq!(readyz().await, (200, "ready".to_string()));
    web.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_escaping_cache_and_ops_routes() {
    let mut stack = Stack::seeded().await;
    let web = stack.web(|_| {}).await;
    let hostile_path = format!(
        "/dashboard/apps/{}?days=90",
        web::params::encode_component(HOSTILE)
    );
    let seed14 = format!("/dashboard/installs/{}", stack.public_id_of("seed-014"));
    let routes = [
        "/dashboard",
        "/dashboard?days=90",
        "/dashboard/errors?days=90",
        hostile_path.as_str(),
        "/dashboard/installs?days=365",
        seed14.as_str(),
        "/dashboard/alerts",
        "/dashboard/exit-codes",
        "/api/v2/dashboard",
        "/api/exit-codes",
        "/api/openapi.json",
        "/static/app.css",
        "/static/vendor/chart.umd.min.js",
        "/healthz",
        "/readyz",
        "/metrics",
        "/nothing",
    ];
    for path in routes {
        let resp = web.get(path).await;
        assert!(resp.status().as_u16() < 500, "{path}: {}", resp.status());
        let h = resp.headers();
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            csp.contains("default-src 'self'")
                && csp.contains("script-src 'self'")
                && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
        assert_eq!(
            h.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"DENY"[..]),
            "{path}"
        );
        assert_eq!(
            h.get("referrer-policy").map(|v| v.as_bytes()),
            Some(&b"no-referrer"[..]),
            "{path}"
        );
        if path.starts_with("/dashboard") {
            let html = resp.text().await.expect("html");
            assert!(
                !html.contains(HOSTILE),
                "{path} shows the hostile name unescaped"
            );
            assert!(
                !html.contains("<script>alert"),
                "{path} shows a log unescaped"
            );
            assert!(
                !html.contains("http://")
                    && !html.contains("https://")
                    && !html.contains("src=\"//"),
                "{path} references another host"
            );
            assert!(
                !html.contains("<script>")
                    && !html.contains(" style=\"")
                    && !html.contains(" onclick"),
                "{path} has inline script or style"
            );
        }
    }
    let html = web.text(&hostile_path).await;
    assert!(crate::harness::shows_escaped(&html, HOSTILE));
    assert!(
        crate::harness::shows_escaped(&html, "<script>alert(1)</script>"),
        "log excerpt escaped"
    );
    let stat = web.get("/static/dashboard.js").await;
    assert!(stat.headers()["cache-control"]
        .to_str()
        .expect("cc")
        .contains("max-age=31536000"));

    // Cache: the first read of a key is a miss, the next a hit.
    let first = web.get("/api/v2/dashboard?days=7&repo=external").await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let second = web.get("/api/v2/dashboard?days=7&repo=external").await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    let metrics = web.metrics().await;
    assert_eq!(
        web.get("/metrics").await.status(),
        404,
        "metrics are on the ops port only"
    );
    assert!(
        metrics.contains("telemetry_web_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("telemetry_web_cache_total{cache=\"dashboard\",result=\"hit\"}"),
        "{metrics}"
    );

    // ClickHouse down: readiness 503, cached answers still served, uncached ones 503 JSON.
    stack.clickhouse.kill();
    testkit::poll_until("readyz 503", Duration::from_secs(20), async || {
        web.get("/readyz").await.status() == 503
    })
    .await;
    assert_eq!(
        web.get("/api/v2/dashboard?days=7&repo=external")
            .await
            .status(),
        200
    );
    for path in ["/health", "/healthz"] {
        let health = web.get(path).await;
        assert_eq!(health.status(), 503, "{path}");
        let body: Value = health.json().await.expect("json");
        assert_eq!(body["status"], "degraded", "{path}");
    }
    assert_eq!(web.get("/livez").await.status(), 200);
    let down = web.get("/api/v2/errors?days=7&repo=external").await;
    assert_eq!(down.status(), 503);
    assert_eq!(
        down.json::<Value>().await.expect("json")["error"],
        "unavailable"
    );
    stack.clickhouse.restart().expect("restart");
    web.wait_ready().await;
    let took = web.shutdown().await;
    assert!(took < Duration::from_secs(11), "shutdown took {took:?}");
}
