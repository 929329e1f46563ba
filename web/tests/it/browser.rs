//! Headless Chromium over the seeded dashboard: the charts are drawn, the numbers in the page equal
//! ClickHouse's, the console shows no error (no CSP violation either), no request goes to another host, a
//! hostile app name shows as text, and a screenshot is kept under `target/web-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{Stack, HOSTILE};

fn chromium() -> PathBuf {
    testkit::find_binary("chromium", "CHROMIUM_BIN")
        .expect("chromium not found: apt-get install -y chromium (or set CHROMIUM_BIN)")
}

/// Runs headless Chromium on `url` with the page's scripts, no network beyond loopback, and `extra`.
pub(crate) fn run_chromium(profile: &Path, url: &str, extra: &[String]) -> Output {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=10000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    cmd.output().expect("chromium runs")
}

pub(crate) fn attr<'a>(dom: &'a str, marker: &str) -> Option<&'a str> {
    let start = dom.find(marker)? + marker.len();
    let rest = &dom[start..];
    Some(&rest[..rest.find('"')?])
}

/// The text of the element carrying `data-figure="<name>"`.
pub(crate) fn figure<'a>(dom: &'a str, name: &str) -> &'a str {
    let marker = format!("data-figure=\"{name}\">");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no figure {name}"))
        + marker.len();
    let rest = &dom[start..];
    &rest[..rest.find('<').expect("closing tag")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_in_chromium_with_exact_figures() {
    let stack = Stack::seeded().await;
    let web = stack.web(|_| {}).await;
    let profile = tempfile::tempdir().expect("profile");
    let net_log = profile.path().join("net-log.json");
    let url = web.url("/dashboard?days=90");
    let dom_run = {
        let (profile, url, net_log) = (profile.path().to_path_buf(), url.clone(), net_log.clone());
        tokio::task::spawn_blocking(move || {
            run_chromium(
                &profile,
                &url,
                &[
                    "--dump-dom".into(),
                    format!("--log-net-log={}", net_log.display()),
                ],
            )
        })
        .await
        .expect("join")
    };
    let dom = String::from_utf8_lossy(&dom_run.stdout).to_string();
    let stderr = String::from_utf8_lossy(&dom_run.stderr).to_string();
    assert!(dom.contains("</html>"), "no DOM from chromium: {stderr}");

    // Charts drawn: dashboard.js marks the body once every canvas has its chart.
    assert_eq!(
        attr(&dom, "data-charts=\""),
        Some("ready"),
        "charts not drawn: {stderr}"
    );
    assert_eq!(attr(&dom, "data-charts-count=\""), Some("10"));

    // The numbers in the page are ClickHouse's.
    let d = web.json("/api/v2/dashboard?days=90").await;
    let since = d["since"]["unix"].as_u64().expect("since");
    let count = |cond: &str| {
        stack.count(&format!(
            "SELECT count() FROM telemetry.installs_final WHERE started_at >= toDateTime({since}) AND {cond}"
        ))
    };
    assert_eq!(figure(&dom, "total_installs"), count("1").to_string());
    assert_eq!(
        figure(&dom, "failed_count"),
        count("status = 'failed'").to_string()
    );
    assert_eq!(
        figure(&dom, "aborted_count"),
        count("status = 'aborted'").to_string()
    );
    assert_eq!(
        figure(&dom, "installing_count"),
        count("is_final = 0").to_string()
    );
    assert_eq!(
        figure(&dom, "success_count"),
        format!("{} succeeded", count("status = 'success'"))
    );

    // The hostile name is text: escaped in the DOM, and no element was made of it.
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "hostile name not shown as text"
    );
    assert!(!dom.contains(HOSTILE), "hostile name became markup");
    assert!(!dom.contains("<img"), "an <img> element exists");

    // No console errors (a CSP violation or a script error is logged as a console message).
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("CONSOLE") || l.contains("Content Security Policy") || l.contains("Uncaught")
        })
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");

    // Every request the page made went to this server. (The browser's own background requests, e.g.
    // its update check, have no initiator and cannot resolve anyway under --host-resolver-rules.)
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&net_log).expect("net log"))
            .expect("net log json");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let origin = format!("http://{}", web.addr);
    let mut page_requests = Vec::new();
    for event in log["events"].as_array().expect("events") {
        if event["type"] != start_job {
            continue;
        }
        let (Some(url), Some(initiator)) = (
            event["params"]["url"].as_str(),
            event["params"]["initiator"].as_str(),
        ) else {
            continue;
        };
        if initiator != "not an origin" || url.starts_with(&origin) {
            page_requests.push((url.to_string(), initiator.to_string()));
        }
    }
    let foreign: Vec<_> = page_requests
        .iter()
        .filter(|(url, _)| !url.starts_with(&origin))
        .collect();
    assert!(foreign.is_empty(), "requests to other hosts: {foreign:?}");
    assert!(
        page_requests
            .iter()
            .any(|(url, _)| url.contains("/static/vendor/chart.umd.min.js")),
        "chart.js loaded from here: {page_requests:?}"
    );
    assert!(
        page_requests
            .iter()
            .any(|(url, _)| url.contains("/api/v2/dashboard?days=90")),
        "{page_requests:?}"
    );

    // The screenshot artifact.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/web-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    let shot = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let shot_profile = tempfile::tempdir().expect("profile");
    let shot_run = {
        let (profile, url, shot) = (shot_profile.path().to_path_buf(), url.clone(), shot.clone());
        tokio::task::spawn_blocking(move || {
            run_chromium(
                &profile,
                &url,
                &[
                    format!("--screenshot={}", shot.display()),
                    "--window-size=1280,2400".into(),
                ],
            )
        })
        .await
        .expect("join")
    };
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot missing or empty ({size} bytes): {}",
        String::from_utf8_lossy(&shot_run.stderr)
    );
    web.shutdown().await;
}
