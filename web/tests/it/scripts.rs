//! `/api/scripts` in the running service's shape over a seeded set of its own (stored by the writer): every
//! figure against values worked out by hand from the seeds, for all time (installs older than a year
//! included), today, 14 days, the lenient `days` values, `repo=all` and `slug=`; the script catalogue from
//! a JSON file and from a real PocketBase (paged), its refresh and a failed reload keeping the last copy;
//! and the pages at the running service's URLs in headless Chromium, each showing its figures.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::pocketbase::{PocketBaseServer, SUPERUSER_EMAIL, SUPERUSER_PASSWORD};
use testkit::poll_until;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::browser::{attr, figure, run_chromium};
use crate::harness::{Stack, Web};

const MAIN: &str = "community-scripts/ProxmoxVE";
const FORK: &str = "someuser/ProxmoxVE-fork";
const DAY: i64 = 86_400;

/// One install: app, type, repo source, slug, calendar days before today, and the final (status, exit
/// code, error) or `None` while it runs.
type Seed = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    i64,
    Option<(&'static str, u8, &'static str)>,
);

const OK: Option<(&str, u8, &str)> = Some(("success", 0, ""));

/// 19 installs. docker (main repo, its slug): today 3 success, 1 failed, 1 exit 130 (aborted), 1 running;
/// 5 days ago 2 success, 1 failed, 1 "aborted by user" (aborted); 20 days ago 1 success; 400 days ago 2
/// success. jellyfin (main repo, no slug): 10 days ago 1 success, 1 failed; 30 days ago 1 success.
/// old-script (main repo): 500 days ago 1 success. immich (external, a fork's slug): today 1 success.
/// haos (ProxmoxVED, vm): 2 days ago 1 failed.
fn seeds() -> Vec<Seed> {
    let failed = |code| Some(("failed", code, "E: Unable to locate package foo"));
    let d = |day, last| ("docker", "lxc", "ProxmoxVE", Some(MAIN), day, last);
    let j = |day, last| ("jellyfin", "lxc", "ProxmoxVE", None, day, last);
    vec![
        d(0, OK),
        d(0, OK),
        d(0, OK),
        d(0, failed(100)),
        d(0, failed(130)),
        d(0, None),
        d(5, OK),
        d(5, OK),
        d(5, failed(100)),
        d(5, Some(("failed", 1, "Script aborted by user"))),
        d(20, OK),
        d(400, OK),
        d(400, OK),
        j(10, OK),
        j(10, failed(6)),
        j(30, OK),
        ("old-script", "lxc", "ProxmoxVE", None, 500, OK),
        ("immich", "lxc", "external", Some(FORK), 0, OK),
        ("haos", "vm", "ProxmoxVED", None, 2, failed(203)),
    ]
}

fn accept(body: &Value, at: i64, order: u32) -> schema::Accepted {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, at as u64, order);
    schema::validate(
        body.to_string().as_bytes(),
        schema::Reception {
            event_id: Uuid::new_v7(ts),
            received_at: OffsetDateTime::from_unix_timestamp(at).expect("time"),
        },
    )
    .unwrap_or_else(|e| panic!("seed rejected: {e}: {body}"))
}

/// The seeds' events. Installs of a past day start at that day's midnight (plus their index in
/// seconds), today's halfway between midnight and now: whole calendar days, whatever the time of day.
fn events() -> Vec<schema::Accepted> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let midnight = now - now.rem_euclid(DAY);
    let mut out = Vec::new();
    for (n, (app, kind, repo, slug, day, last)) in seeds().into_iter().enumerate() {
        let id = format!("scripts-{n:03}");
        let start = if day == 0 {
            midnight + (now - midnight) / 2 + n as i64
        } else {
            midnight - day * DAY + n as i64
        };
        let mut first = json!({
            "random_id": id, "execution_id": id, "type": kind, "nsapp": app, "status": "installing",
            "repo_source": repo, "os_type": "debian", "os_version": "12", "pve_version": "8.4.1",
            "method": "default"
        });
        if let Some(slug) = slug {
            first["repo_slug"] = json!(slug);
        }
        out.push(accept(&first, start, 0));
        let Some((status, code, error)) = last else {
            continue;
        };
        let mut last = json!({
            "random_id": id, "execution_id": id, "type": kind, "nsapp": app, "status": status,
            "exit_code": code, "repo_source": repo
        });
        if !error.is_empty() {
            last["error"] = json!(error);
        }
        out.push(accept(&last, start + 30, 1));
    }
    out
}

async fn stack() -> Stack {
    Stack::with(events(), seeds().len() as u64).await
}

/// One row of `top_scripts`: app, type, total, success, failed, aborted, installing, success_rate,
/// days_old, installs_per_day.
type Row = (
    &'static str,
    &'static str,
    u64,
    u64,
    u64,
    u64,
    u64,
    f64,
    i64,
    f64,
);

fn row(v: &Value) -> (String, String, u64, u64, u64, u64, u64, f64, i64, f64) {
    let u = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v}"));
    (
        v["app"].as_str().expect("app").to_string(),
        v["type"].as_str().expect("type").to_string(),
        u("total"),
        u("success"),
        u("failed"),
        u("aborted"),
        u("installing"),
        f("success_rate"),
        v["days_old"].as_i64().expect("days_old"),
        f("installs_per_day"),
    )
}

/// `/api/scripts?<query>` answers 200 with these totals and exactly these rows, in this order.
async fn check(web: &Web, query: &str, scripts: u64, installs: u64, rows: &[Row]) -> Value {
    let answer = web.json(&format!("/api/scripts{query}")).await;
    assert_eq!(
        (
            answer["total_scripts"].as_u64(),
            answer["total_installs"].as_u64()
        ),
        (Some(scripts), Some(installs)),
        "{query}: {answer}"
    );
    let got: Vec<_> = answer["top_scripts"]
        .as_array()
        .expect("top_scripts")
        .iter()
        .map(row)
        .collect();
    let expected: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.0.to_string(),
                r.1.to_string(),
                r.2,
                r.3,
                r.4,
                r.5,
                r.6,
                r.7,
                r.8,
                r.9,
            )
        })
        .collect();
    assert_eq!(got, expected, "{query}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_answer_the_running_services_shape_with_exact_figures() {
    let stack = stack().await;
    let web = stack.web(|_| {}).await;

    // All time: the installs older than a year count, and the ages are whole days since the first one.
    let all_time = check(
        &web,
        "?days=0",
        3,
        17,
        &[
            ("docker", "lxc", 13, 8, 2, 2, 1, 80.0, 400, 0.03),
            ("jellyfin", "lxc", 3, 2, 1, 0, 0, 66.67, 30, 0.1),
            ("old-script", "lxc", 1, 1, 0, 0, 0, 100.0, 500, 0.0),
        ],
    )
    .await;
    // A bounded answer: with SCRIPTS_MAX_ROWS=2 only the two most installed scripts are listed (a flood
    // of made-up names cannot grow it).
    let bounded = stack.web(|c| c.scripts_max_rows = 2).await;
    let capped = bounded.json("/api/scripts?days=0").await;
    let apps: Vec<&str> = capped["top_scripts"]
        .as_array()
        .expect("top_scripts")
        .iter()
        .map(|s| s["app"].as_str().expect("app"))
        .collect();
    assert_eq!(apps, ["docker", "jellyfin"], "{capped}");
    assert_eq!(capped["total_scripts"], 2);
    // Exactly the running service's keys.
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&all_time["top_scripts"][0]),
        [
            "aborted",
            "app",
            "days_old",
            "failed",
            "installing",
            "installs_per_day",
            "success",
            "success_rate",
            "total",
            "type"
        ]
    );
    for key in [
        "total_scripts",
        "total_installs",
        "top_scripts",
        "recent_scripts",
    ] {
        assert!(all_time.get(key).is_some(), "{key}");
    }

    // Today only (and a negative period is today).
    let docker_today = ("docker", "lxc", 6, 3, 1, 1, 1, 75.0, 400, 6.0);
    let today = check(&web, "?days=1", 1, 6, &[docker_today]).await;
    check(&web, "?days=-1", 1, 6, &[docker_today]).await;
    let recent = today["recent_scripts"].as_array().expect("recent_scripts");
    assert_eq!(recent.len(), 6, "{today}");
    let mut statuses: Vec<&str> = recent
        .iter()
        .map(|r| r["status"].as_str().expect("status"))
        .collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [
            "aborted",
            "failed",
            "installing",
            "success",
            "success",
            "success"
        ]
    );
    for r in recent {
        assert_eq!(r["app"], "docker");
        assert_eq!(
            (
                &r["type"],
                &r["os_type"],
                &r["os_version"],
                &r["pve_version"],
                &r["method"]
            ),
            (
                &json!("lxc"),
                &json!("debian"),
                &json!("12"),
                &json!("8.4.1"),
                &json!("default")
            )
        );
        let created = r["created"].as_str().expect("created");
        assert!(
            created.len() == 24 && &created[10..11] == " " && created.ends_with(".000Z"),
            "{created}"
        );
        let code = r["exit_code"].as_i64().expect("exit_code");
        match r["status"].as_str() {
            Some("failed") => assert_eq!(code, 100),
            Some("aborted") => assert_eq!(code, 130),
            _ => assert_eq!(code, 0),
        }
    }
    let created: Vec<&str> = recent
        .iter()
        .map(|r| r["created"].as_str().expect("created"))
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // 14 calendar days: today and 13 before.
    check(
        &web,
        "?days=14",
        2,
        12,
        &[
            ("docker", "lxc", 10, 5, 2, 2, 1, 71.43, 400, 0.71),
            ("jellyfin", "lxc", 2, 1, 1, 0, 0, 50.0, 30, 0.14),
        ],
    )
    .await;
    // Unreadable: the default 30 days (the install 30 days ago is just outside).
    let thirty = [
        ("docker", "lxc", 11, 6, 2, 2, 1, 75.0, 400, 0.37),
        ("jellyfin", "lxc", 2, 1, 1, 0, 0, 50.0, 30, 0.07),
    ];
    check(&web, "?days=abc", 2, 13, &thirty).await;
    check(&web, "", 2, 13, &thirty).await;
    check(&web, "?days=&repo=&slug=", 2, 13, &thirty).await;
    check(&web, "?days=30&repo=gitlab", 2, 13, &thirty).await;
    // Above a year: a year.
    check(
        &web,
        "?days=366",
        2,
        14,
        &[
            ("docker", "lxc", 11, 6, 2, 2, 1, 75.0, 400, 0.03),
            ("jellyfin", "lxc", 3, 2, 1, 0, 0, 66.67, 30, 0.1),
        ],
    )
    .await;

    // Every repo.
    check(
        &web,
        "?days=0&repo=all",
        5,
        19,
        &[
            ("docker", "lxc", 13, 8, 2, 2, 1, 80.0, 400, 0.03),
            ("jellyfin", "lxc", 3, 2, 1, 0, 0, 66.67, 30, 0.1),
            ("haos", "vm", 1, 0, 1, 0, 0, 0.0, 2, 0.33),
            ("immich", "lxc", 1, 1, 0, 0, 0, 100.0, 0, 1.0),
            ("old-script", "lxc", 1, 1, 0, 0, 0, 100.0, 500, 0.0),
        ],
    )
    .await;

    // The slug filter, within the repo filter (ProxmoxVE unless told otherwise).
    check(
        &web,
        &format!("?days=0&slug={MAIN}"),
        1,
        13,
        &[("docker", "lxc", 13, 8, 2, 2, 1, 80.0, 400, 0.03)],
    )
    .await;
    check(&web, &format!("?days=0&slug={FORK}"), 0, 0, &[]).await;
    check(
        &web,
        &format!("?days=0&repo=all&slug={FORK}"),
        1,
        1,
        &[("immich", "lxc", 1, 1, 0, 0, 0, 100.0, 0, 1.0)],
    )
    .await;
    check(&web, "?days=0&slug=x'%20OR%201=1%20--", 0, 0, &[]).await;

    // Nothing here is a 400, and the answer is cached like the others.
    for query in [
        "?days=1e9",
        "?days=%ZZ",
        "?repo=%00",
        "?days=99999999999999999999",
    ] {
        let resp = web.get(&format!("/api/scripts{query}")).await;
        assert_eq!(resp.status(), 200, "{query}");
    }
    let first = web.get("/api/scripts?days=7").await;
    let second = web.get("/api/scripts?days=7").await;
    let cache = |r: &reqwest::Response| {
        r.headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    assert_eq!(
        (cache(&first).as_deref(), cache(&second).as_deref()),
        (Some("miss"), Some("hit"))
    );
    web.shutdown().await;
}

/// The catalogue as a JSON file: docker created 1000 days ago, a VM script created 3 days ago that
/// nobody installed, jellyfin without a date.
fn catalogue_json(now: i64, extra: &[&str]) -> String {
    let date = |days: i64| {
        OffsetDateTime::from_unix_timestamp(now - days * DAY)
            .expect("date")
            .date()
            .to_string()
    };
    let mut entries = vec![
        json!({"slug": "docker", "type": "ct", "script_created": format!("{} 00:00:00.000Z", date(1000))}),
        json!({"slug": "never-installed", "type": "vm", "script_created": format!("{} 00:00:00.000Z", date(3))}),
        json!({"slug": "jellyfin", "type": "ct", "script_created": ""}),
    ];
    for slug in extra {
        entries.push(json!({"slug": slug, "type": "ct", "script_created": date(1)}));
    }
    Value::Array(entries).to_string()
}

fn apps(answer: &Value) -> Vec<(String, u64, i64)> {
    answer["top_scripts"]
        .as_array()
        .expect("top_scripts")
        .iter()
        .map(|s| {
            (
                s["app"].as_str().expect("app").to_string(),
                s["total"].as_u64().expect("total"),
                s["days_old"].as_i64().expect("days_old"),
            )
        })
        .collect()
}

fn owned(rows: &[(&str, u64, i64)]) -> Vec<(String, u64, i64)> {
    rows.iter()
        .map(|(a, n, d)| (a.to_string(), *n, *d))
        .collect()
}

/// The number in `/metrics` of `telemetry_web_catalog_loads_total{result="<result>"}`.
async fn catalogue_loads(web: &Web, result: &str) -> u64 {
    let text = web.metrics().await;
    let marker = format!("telemetry_web_catalog_loads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&marker))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_adds_scripts_nobody_installed_and_ages_from_creation() {
    let stack = stack().await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("scripts.json");
    std::fs::write(&file, catalogue_json(now, &[])).expect("catalogue");

    // A JSON file, reloaded every second, every answer computed when asked.
    let path = file.display().to_string();
    let web = stack
        .web(|c| {
            c.script_catalog_url = Some(path);
            c.script_catalog_refresh_secs = 1;
            c.enable_cache = false;
        })
        .await;
    let answer = web.json("/api/scripts?days=14").await;
    assert_eq!(
        apps(&answer),
        owned(&[
            ("docker", 10, 1000),
            ("jellyfin", 2, 30),
            ("never-installed", 0, 3)
        ]),
        "{answer}"
    );
    let never = &answer["top_scripts"][2];
    assert_eq!(
        (
            &never["type"],
            &never["success_rate"],
            &never["installs_per_day"]
        ),
        (&json!("vm"), &json!(0.0), &json!(0.0))
    );
    assert_eq!(answer["total_scripts"], 3);
    assert_eq!(answer["total_installs"], 12);
    // A fork's view, and another repo's, take no catalogue.
    let fork = web.json(&format!("/api/scripts?days=14&slug={MAIN}")).await;
    assert_eq!(apps(&fork), owned(&[("docker", 10, 400)]));
    let ved = web.json("/api/scripts?days=0&repo=ProxmoxVED").await;
    assert_eq!(apps(&ved), owned(&[("haos", 1, 2)]));
    // The page shows the same.
    let page = web.text("/script-analysis?days=14").await;
    assert!(page.contains("never-installed"), "{page}");

    // A new script shows up at the next reload; a broken file keeps the last good copy.
    std::fs::write(&file, catalogue_json(now, &["brand-new"])).expect("catalogue");
    poll_until(
        "the reloaded catalogue",
        Duration::from_secs(30),
        async || {
            let answer = web.json("/api/scripts?days=14").await;
            apps(&answer).iter().any(|(a, _, _)| a == "brand-new")
        },
    )
    .await;
    let errors_before = catalogue_loads(&web, "error").await;
    std::fs::write(&file, "not json").expect("break the file");
    poll_until("a failed reload", Duration::from_secs(30), async || {
        catalogue_loads(&web, "error").await > errors_before
    })
    .await;
    let kept = web.json("/api/scripts?days=14").await;
    assert_eq!(kept["total_scripts"], 4, "{kept}");
    web.shutdown().await;

    // A PocketBase: the collection script_scripts, read page by page (503 scripts: two pages of 500).
    let pb = PocketBaseServer::start().expect("pocketbase");
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!(
            "{}/api/collections/_superusers/auth-with-password",
            pb.url()
        ))
        .json(&json!({"identity": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login answer");
    let token = login["token"].as_str().expect("token").to_string();
    let created = http
        .post(format!("{}/api/collections", pb.url()))
        .header("authorization", &token)
        .json(&json!({
            "name": "script_scripts", "type": "base", "listRule": "", "viewRule": "",
            "fields": [
                {"name": "slug", "type": "text"},
                {"name": "type", "type": "text"},
                {"name": "script_created", "type": "date"}
            ]
        }))
        .send()
        .await
        .expect("create collection");
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let mut records: Vec<Value> = serde_json::from_str(&catalogue_json(now, &[])).expect("json");
    records.extend((0..500).map(|i| json!({"slug": format!("filler-{i:03}"), "type": "ct"})));
    for record in &records {
        let resp = http
            .post(format!(
                "{}/api/collections/script_scripts/records",
                pb.url()
            ))
            .header("authorization", &token)
            .json(record)
            .send()
            .await
            .expect("create record");
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
    }
    let url = pb.url();
    let web = stack.web(|c| c.script_catalog_url = Some(url)).await;
    let answer = web.json("/api/scripts?days=14").await;
    assert_eq!(answer["total_scripts"], 503, "{}", answer["total_scripts"]);
    assert_eq!(
        apps(&answer)[..3],
        owned(&[
            ("docker", 10, 1000),
            ("jellyfin", 2, 30),
            ("filler-000", 0, 0)
        ])[..]
    );
    assert!(apps(&answer).contains(&("never-installed".to_string(), 0, 3)));
    web.shutdown().await;
}

/// The text between `marker` and the next `<`.
fn text_after<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom.find(marker).unwrap_or_else(|| panic!("no {marker}")) + marker.len();
    let rest = &dom[start..];
    &rest[..rest.find('<').expect("closing tag")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_urls_show_their_figures_in_chromium() {
    let stack = stack().await;
    let web = stack.web(|c| c.dashboard_refresh_secs = 1).await;
    let dom = |path: &str| {
        let url = web.url(path);
        async move {
            let profile = tempfile::tempdir().expect("profile");
            let run = tokio::task::spawn_blocking(move || {
                run_chromium(profile.path(), &url, &["--dump-dom".into()])
            })
            .await
            .expect("join");
            let dom = String::from_utf8_lossy(&run.stdout).to_string();
            let stderr = String::from_utf8_lossy(&run.stderr).to_string();
            assert!(dom.contains("</html>"), "no DOM: {stderr}");
            let console: Vec<&str> = stderr
                .lines()
                .filter(|l| {
                    l.contains("CONSOLE")
                        || l.contains("Content Security Policy")
                        || l.contains("Uncaught")
                })
                .collect();
            assert!(console.is_empty(), "console messages: {console:#?}");
            dom
        }
    };

    // `/` is the dashboard: the last 30 days of every repo, the all-time card, and the figures refreshed
    // from /api/figures every second (the browser's virtual time runs ten seconds).
    for path in ["/", "/dashboard"] {
        let page = dom(path).await;
        assert_eq!(figure(&page, "total_installs"), "15", "{path}");
        assert_eq!(figure(&page, "failed_count"), "4", "{path}");
        assert_eq!(figure(&page, "aborted_count"), "2", "{path}");
        assert_eq!(figure(&page, "total_all_time"), "19", "{path}");
        let refreshed: u32 = attr(&page, "data-figures-refreshed=\"")
            .unwrap_or_else(|| panic!("{path}: figures never refreshed"))
            .parse()
            .expect("count");
        assert!(refreshed >= 1);
    }
    let main_only = dom("/dashboard?repo=ProxmoxVE").await;
    assert_eq!(figure(&main_only, "total_all_time"), "17");
    let figures = web.json("/api/figures?repo=ProxmoxVE").await;
    assert_eq!(
        (&figures["total_all_time"], &figures["total_installs"]),
        (&json!(17), &json!(13))
    );

    // The error analysis: failure rate per type, timeline, categories with top apps, recent errors.
    let page = dom("/error-analysis").await;
    assert_eq!(text_after(&page, "data-type-rate=\"lxc\">"), "27.27%");
    assert_eq!(text_after(&page, "data-type-rate=\"vm\">"), "100%");
    assert!(page.contains("data-recent-error=\"docker\""));
    assert!(page.contains("data-recent-error=\"haos\""));
    assert!(page.contains("data-timeline-failed="));
    // Categories of the 6 failed and aborted installs, with the app that fails most in each.
    for (category, count) in [
        ("apt", "2"),
        ("user_aborted", "2"),
        ("config", "1"),
        ("network", "1"),
    ] {
        assert_eq!(
            text_after(&page, &format!("data-category=\"{category}\">")),
            count,
            "{category}"
        );
    }
    let apt_row = &page[page.find("data-category=\"apt\"").expect("apt row")..];
    let apt_row = &apt_row[..apt_row.find("</tr>").expect("row end")];
    assert!(apt_row.contains(">docker</a> (2)"), "{apt_row}");
    assert_eq!(figure(&page, "aborted_count"), "2");
    // Failed and aborted installs of the last 30 days: docker 4, jellyfin 1, haos 1.
    let mut by_app: Vec<&str> = page
        .split("data-recent-error=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').expect("quote")])
        .collect();
    by_app.sort_unstable();
    assert_eq!(
        by_app,
        ["docker", "docker", "docker", "docker", "haos", "jellyfin"]
    );

    // The script analysis: the main repo's last 30 days by default, all time on request.
    let page = dom("/script-analysis").await;
    assert_eq!(figure(&page, "total_installs"), "13");
    assert_eq!(text_after(&page, "data-script-total=\"docker\">"), "11");
    assert_eq!(text_after(&page, "data-script-aborted=\"docker\">"), "2");
    let page = dom("/script-analysis?days=0&repo=all").await;
    assert_eq!(figure(&page, "total_installs"), "19");
    assert_eq!(figure(&page, "total_scripts"), "5");
    assert_eq!(text_after(&page, "data-script-total=\"docker\">"), "13");

    // Screenshots of the two analyses, kept under target/web-artifacts/.
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/web-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    for (name, path) in [
        ("error-analysis.png", "/error-analysis"),
        ("script-analysis.png", "/script-analysis?days=0&repo=all"),
    ] {
        let shot = dir.join(name);
        let _ = std::fs::remove_file(&shot);
        let (url, target) = (web.url(path), shot.clone());
        let profile = tempfile::tempdir().expect("profile");
        let run = tokio::task::spawn_blocking(move || {
            run_chromium(
                profile.path(),
                &url,
                &[
                    format!("--screenshot={}", target.display()),
                    "--window-size=1280,2000".into(),
                ],
            )
        })
        .await
        .expect("join");
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "{name} missing or empty ({size} bytes): {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }

    // The old pages are linked from every page, and today's pages still answer.
    let html = web.text("/dashboard/errors").await;
    assert!(html.contains("href=\"/error-analysis?") && html.contains("href=\"/script-analysis\""));
    web.shutdown().await;
}
