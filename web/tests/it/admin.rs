//! The admin actions end to end: without ADMIN_PASSWORD they do not exist (404); a wrong or missing
//! password is 401 and too many of them 429 (per client address); the right one in the header or in the
//! JSON body reaches the real `telemetry-alerter` (a test mail in the SMTP sink) and the real
//! `telemetry-aggregator` (a stuck install timed out on request), over NATS request–reply; and
//! create-issue posts an app's figures from ClickHouse to a fake GitHub that records the request.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use testkit::smtp::SmtpServer;
use testkit::{poll_until, Process};

use crate::harness::{Stack, Web};

const PASSWORD: &str = "correct horse battery staple";
const ACTIONS: [&str; 3] = [
    "/api/alerts/test",
    "/api/cleanup/run",
    "/api/github/create-issue",
];

/// POSTs to `path` with the password in the header (`header`) and/or a JSON body; status and JSON body.
async fn post(
    web: &Web,
    path: &str,
    header: Option<&str>,
    body: Option<Value>,
    forwarded_for: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = web.http.post(web.url(path));
    if let Some(password) = header {
        request = request.header("X-Admin-Password", password);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(client) = forwarded_for {
        request = request.header("X-Forwarded-For", client);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"));
    (status, value)
}

async fn get(web: &Web, path: &str) -> (StatusCode, Value) {
    let response = web.get(path).await;
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"));
    (status, value)
}

async fn with_password(stack: &Stack, tweak: impl FnOnce(&mut web::Config)) -> Web {
    let web = stack
        .web(|c| {
            c.admin_password = web::config::Secret::new(PASSWORD);
            tweak(c);
        })
        .await;
    broker_connected(&web).await;
    web
}

/// Waits until the web's NATS connection is up (its readiness only covers ClickHouse): the cleanup status
/// no longer says the broker is unreachable.
async fn broker_connected(web: &Web) {
    poll_until(
        "the web's broker connection",
        Duration::from_secs(30),
        async || {
            let (_, body) = get(web, "/api/cleanup/status").await;
            let message = body["message"].as_str().unwrap_or_default().to_string();
            (!message.contains("broker")).then_some(()).ok_or(message)
        },
    )
    .await;
}

#[tokio::test]
async fn without_a_password_the_actions_do_not_exist_and_with_one_they_are_guarded() {
    let stack = Stack::with(Vec::new(), 0).await;
    let open = stack.web(|_| {}).await;
    broker_connected(&open).await;
    for path in ACTIONS {
        let (status, body) = post(&open, path, Some(PASSWORD), Some(json!({})), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"], "not_found", "{path}: {body}");
        let (status, _) = get(&open, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}");
    }
    // The status needs no password; with no aggregator running it is 503.
    let (status, body) = get(&open, "/api/cleanup/status").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("telemetry-aggregator"),
        "{body}"
    );
    open.shutdown().await;

    let guarded = with_password(&stack, |c| c.admin_max_failures_per_min = 3).await;
    let (status, body) = post(&guarded, ACTIONS[0], None, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no password: {body}");
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = post(&guarded, ACTIONS[1], Some("wrong"), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong header");
    let wrong_body = json!({ "password": "correct horse battery stapl" });
    let (status, _) = post(&guarded, ACTIONS[2], None, Some(wrong_body), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong body field");
    // Three failures from this address: now even the right password waits out the minute.
    let (status, body) = post(&guarded, ACTIONS[0], Some(PASSWORD), None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    // Another client behind the (loopback) front door is not held back: its right password passes, and
    // with no alerter running the answer is 503.
    let (status, body) = post(
        &guarded,
        ACTIONS[0],
        Some(PASSWORD),
        None,
        Some("203.0.113.9"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("no telemetry-alerter"),
        "{body}"
    );
    // Without a GitHub configuration the issue cannot be opened.
    let (status, body) = post(
        &guarded,
        ACTIONS[2],
        None,
        Some(json!({ "password": PASSWORD, "app": "docker" })),
        Some("203.0.113.10"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "not_configured");
    guarded.shutdown().await;
}

#[tokio::test]
async fn a_test_mail_goes_through_the_real_alerter() {
    let stack = Stack::with(Vec::new(), 0).await;
    let smtp = SmtpServer::start().expect("smtp");
    let web = with_password(&stack, |c| c.admin_reply_timeout_secs = 2).await;

    // A subscriber that never answers: 504 after the deadline.
    let silent = fleet::nats::connect(&stack.nats.url(), "test-silent")
        .await
        .expect("connect");
    fleet::nats::wait_connected(&silent).await;
    let requests = silent
        .subscribe(schema::names::ADMIN_ALERTS_TEST_SUBJECT)
        .await
        .expect("subscribe");
    silent.flush().await.expect("flush");
    // Until the server routes the subject to the new subscription the web hears "no responders" (503).
    let body = poll_until(
        "504 from the silent subscriber",
        Duration::from_secs(60),
        async || {
            let (status, body) = post(&web, "/api/alerts/test", Some(PASSWORD), None, None).await;
            (status == StatusCode::GATEWAY_TIMEOUT)
                .then_some(body.clone())
                .ok_or(format!("{status}: {body}"))
        },
    )
    .await;
    assert_eq!(body["error"], "timeout");
    drop(requests);
    silent.flush().await.expect("flush");
    web.shutdown().await;
    // The real alerter may take longer than 2 s to hand a mail to SMTP on a loaded machine, and a request
    // given up by the web would still send its mail: a patient web from here on.
    let web = with_password(&stack, |c| c.admin_reply_timeout_secs = 60).await;

    let alerter = Process::spawn(
        Command::new(testkit::bin_path("telemetry-alerter"))
            .env_clear()
            .args(["--nats-url", &stack.nats.url()])
            .args(["--ops-addr", "127.0.0.1:0"])
            .args(["--smtp-host", "127.0.0.1"])
            .args(["--smtp-port", &smtp.port().to_string()])
            .args(["--smtp-tls", "none"])
            .args(["--smtp-from", "telemetry@localhost"])
            .args(["--smtp-to", "maintainers@localhost"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let answer = poll_until("the alerter answers", Duration::from_secs(60), async || {
        let (status, body) = post(&web, "/api/alerts/test", Some(PASSWORD), None, None).await;
        (status == StatusCode::OK)
            .then_some(body.clone())
            .ok_or(format!("{status}: {body}"))
    })
    .await;
    assert_eq!(answer["sent"], true, "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
    let (status, answer) = post(
        &web,
        "/api/alerts/test",
        None,
        Some(json!({ "password": PASSWORD })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "password in the body: {answer}");
    assert_eq!(answer["sent"], true, "{answer}");
    let mails = poll_until(
        "two test mails in the sink",
        Duration::from_secs(30),
        async || {
            let mails = smtp.mails();
            (mails.len() >= 2).then_some(mails)
        },
    )
    .await;
    assert_eq!(mails.len(), 2);
    assert!(mails.iter().all(|m| m.contains("[telemetry] test mail")));
    let status = alerter.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "telemetry-alerter exited with {status}");
    web.shutdown().await;
}

#[tokio::test]
async fn cleanup_runs_and_reports_through_the_real_aggregator() {
    let stack = Stack::with(Vec::new(), 0).await;
    let web = with_password(&stack, |_| {}).await;
    let aggregator = Process::spawn(
        Command::new(testkit::bin_path("telemetry-aggregator"))
            .env_clear()
            .args(["--nats-url", &stack.nats.url()])
            .args(["--ops-addr", "127.0.0.1:0"])
            .args(["--stuck-after", "3s"])
            // One periodic look at the first publish, then none for hours: only the request times out.
            .args(["--cleanup-interval-min", "600"])
            .args(["--publish-interval-ms", "200"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let status = poll_until(
        "the aggregator answers",
        Duration::from_secs(60),
        async || {
            let (status, body) = get(&web, "/api/cleanup/status").await;
            (status == StatusCode::OK)
                .then_some(body.clone())
                .ok_or(format!("{status}: {body}"))
        },
    )
    .await;
    assert_eq!(
        status,
        json!({ "stuck_count": 0, "stuck_after_hours": 3.0 / 3600.0, "check_interval": 600.0, "enabled": true })
    );

    // One install that never ends, published as the edge would.
    let client = fleet::nats::connect(&stack.nats.url(), "test-events")
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let accepted = schema::validate(
        testkit::fixtures::body("stuck-web-1", "docker", "installing", "").as_bytes(),
        schema::Reception::now(),
    )
    .expect("valid");
    js.send_publish(
        accepted.event.subject(),
        async_nats::jetstream::message::PublishMessage::build()
            .payload(accepted.event.to_json().into())
            .message_id(&accepted.msg_id),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    poll_until(
        "the install counts as stuck",
        Duration::from_secs(30),
        async || {
            let (_, body) = get(&web, "/api/cleanup/status").await;
            (body["stuck_count"] == 1)
                .then_some(())
                .ok_or(body.to_string())
        },
    )
    .await;

    let (status, body) = post(
        &web,
        "/api/cleanup/run",
        None,
        Some(json!({ "password": PASSWORD })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["updated"], 1, "{body}");
    assert!(body["message"].is_string(), "{body}");
    poll_until(
        "the timeout folded in",
        Duration::from_secs(30),
        async || {
            let (_, body) = get(&web, "/api/cleanup/status").await;
            (body["stuck_count"] == 0)
                .then_some(())
                .ok_or(body.to_string())
        },
    )
    .await;
    let (status, body) = post(&web, "/api/cleanup/run", Some(PASSWORD), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["updated"], 0, "nothing left: {body}");
    let exit = aggregator.terminate(Duration::from_secs(30)).await;
    assert!(exit.success(), "telemetry-aggregator exited with {exit}");
    web.shutdown().await;
}

/// One request the fake GitHub received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    authorization: String,
    body: Value,
}

/// A fake GitHub API on a free loopback port: records each request and answers `status` with an issue.
async fn fake_github(status: StatusCode) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let seen = recorded.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: HeaderMap,
              body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("recorded").push(Recorded {
                    method: method.to_string(),
                    path: uri.path().to_string(),
                    authorization: headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let answer = if status.is_success() {
                    json!({ "number": 4242, "html_url": "https://github.example/o/r/issues/4242" })
                } else {
                    json!({ "message": "Validation Failed" })
                };
                (status, axum::Json(answer))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, recorded)
}

#[tokio::test]
async fn create_issue_posts_the_apps_figures_to_github() {
    let stack = Stack::seeded().await;
    let (github, recorded) = fake_github(StatusCode::CREATED).await;
    let web = with_password(&stack, |c| {
        c.github_api_url = github.clone();
        c.github_token = web::config::Secret::new("ghp_test_token");
        c.github_owner = Some("community-scripts".into());
        c.github_repo = Some("ProxmoxVE".into());
    })
    .await;
    let (status, body) = post(
        &web,
        "/api/github/create-issue",
        Some(PASSWORD),
        Some(json!({ "app": "docker" })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["number"], 4242, "{body}");
    assert_eq!(body["url"], "https://github.example/o/r/issues/4242");

    let requests = recorded.lock().expect("recorded").clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/repos/community-scripts/ProxmoxVE/issues");
    assert_eq!(request.authorization, "Bearer ghp_test_token");
    let title = request.body["title"].as_str().expect("title");
    let text = request.body["body"].as_str().expect("body");
    assert!(title.starts_with("docker: "), "{title}");
    assert_eq!(body["title"], title);
    // The figures are ClickHouse's (every docker seed lies within the 30 days).
    let installs =
        stack.count("SELECT count() FROM telemetry.installs_final WHERE nsapp = 'docker'");
    let failed = stack.count(
        "SELECT count() FROM telemetry.installs_final WHERE nsapp = 'docker' AND status = 'failed'",
    );
    assert!(failed > 0 && installs > failed);
    assert!(
        text.contains(&format!("| installs | {installs} |")),
        "{text}"
    );
    assert!(text.contains(&format!("| failed | {failed} |")), "{text}");
    let success = stack.count(
        "SELECT count() FROM telemetry.installs_final WHERE nsapp = 'docker' AND status = 'success'",
    );
    let rate = format!("{:.1}%", failed as f64 * 100.0 / (failed + success) as f64);
    assert!(
        text.contains(&format!("| failure rate | {rate} |")),
        "{text}"
    );
    assert_eq!(
        title,
        format!("docker: {rate} of installs failed in the last 30 days")
    );
    assert!(text.contains("| 100 |"), "exit code 100 listed: {text}");

    // An app without installs opens nothing; the password never reaches GitHub.
    let (status, body) = post(
        &web,
        "/api/github/create-issue",
        None,
        Some(json!({ "app": "no-such-app", "password": PASSWORD })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let requests = recorded.lock().expect("recorded").clone();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].body.to_string().contains(PASSWORD));
    web.shutdown().await;

    // GitHub refusing is a 502 with its reason.
    let (refusing, _) = fake_github(StatusCode::UNPROCESSABLE_ENTITY).await;
    let web = with_password(&stack, |c| {
        c.github_api_url = refusing;
        c.github_token = web::config::Secret::new("ghp_test_token");
        c.github_owner = Some("o".into());
        c.github_repo = Some("r".into());
    })
    .await;
    let (status, body) = post(
        &web,
        "/api/github/create-issue",
        Some(PASSWORD),
        Some(json!({ "app": "docker" })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("Validation Failed"),
        "{body}"
    );
    web.shutdown().await;
}
