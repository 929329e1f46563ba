//! The rules end to end: a failing app, its recovery, a new error signature, and the test mail.

use std::time::Duration;

use schema::alert::{Kind, Rule, Scope};

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_half_failing_app_is_mailed_once_then_resolved() {
    let stack = Stack::start().await;
    stack.installs("nginx", "ok", 0, 150).await;
    stack.installs("docker", "bad", 20, 20).await;
    stack.wait_rollup("docker", 40).await;
    let alerter = stack.start_alerter(stack.alerter_config()).await;

    let mails = stack.wait_mails(1, T).await;
    let mail = &mails[0];
    assert_eq!(
        subject(mail),
        "[telemetry] failure rate 50.0% (20 failed of 40 decided) in 24h: app \"docker\""
    );
    for needle in [
        "Failure rate: 50.0%",
        "Installs started: 40",
        "Success: 20",
        "Failed: 20",
        "100 (apt)",
        "E: Unable to locate package foo x20",
        "http://dash.test/dashboard/apps/docker",
        "maintainers@localhost",
        "oncall@localhost",
        "text/html",
    ] {
        assert!(mail.contains(needle), "{needle:?} not in {mail}");
    }

    // Recovery: 120 more successes bring docker to 20 / 160 = 12.5 %, below 20 % - 5 %.
    stack.installs("docker", "good", 0, 120).await;
    // It resolves as soon as the rate, rising with each success, is under 15 %.
    let mails = stack.wait_mails(2, T).await;
    let resolved = subject(&mails[1]);
    let rate: f64 = resolved
        .strip_prefix("[telemetry] resolved: failure rate back to ")
        .and_then(|rest| rest.strip_suffix("% in 24h: app \"docker\""))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("unexpected subject {resolved:?}"));
    assert!((12.5..15.0).contains(&rate), "{resolved}");
    stack.still_mails(2, Duration::from_secs(2)).await;

    let events = stack.alert_events().await;
    let kinds: Vec<(Kind, Rule, Scope, &str)> = events
        .iter()
        .map(|e| (e.kind, e.rule, e.scope, e.subject.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Kind::Alert, Rule::FailureRate, Scope::App, "docker"),
            (Kind::Resolved, Rule::FailureRate, Scope::App, "docker"),
        ]
    );
    assert_eq!(
        (events[0].failed, events[0].success, events[0].failure_rate),
        (20, 20, Some(0.5))
    );
    assert_eq!(
        events[0].dashboard_url,
        "http://dash.test/dashboard/apps/docker"
    );
    assert!(events[1].failure_rate.is_some_and(|r| r < 0.15));
    alerter.stop().await.expect("alerter run");
    stack.stop().await;
}

#[tokio::test]
async fn a_new_error_signature_is_mailed_once() {
    let stack = Stack::start().await;
    let installs = (0..6).map(|i| {
        let exec = format!("sig-{i}");
        vec![
            body(&exec, "zigbee2mqtt", "installing", ""),
            body(
                &exec,
                "zigbee2mqtt",
                "failed",
                r#","exit_code":243,"error":"x\nnpm ERR! code ERESOLVE""#,
            ),
        ]
    });
    stack.add(installs.collect()).await;
    stack.wait_rollup("zigbee2mqtt", 6).await;
    let mut config = stack.alerter_config();
    config.alert_signature_min_installs = 5;
    config.alert_min_installs = 1_000;
    let alerter = stack.start_alerter(config).await;
    let mails = stack.wait_mails(1, T).await;
    assert_eq!(
        subject(&mails[0]),
        "[telemetry] new error signature in 6 installs within 1h: \"npm ERR! code ERESOLVE\""
    );
    assert!(mails[0].contains("zigbee2mqtt (6)"), "{}", mails[0]);
    assert!(mails[0].contains("http://dash.test/dashboard/apps/zigbee2mqtt"));
    stack.still_mails(1, Duration::from_secs(2)).await;
    alerter.stop().await.expect("alerter run");
    stack.stop().await;
}

#[tokio::test]
async fn send_test_delivers_a_test_mail() {
    let stack = Stack::start().await;
    let config = stack.alerter_config();
    let recipients = alerter::send_test(&config).await.expect("send-test");
    assert_eq!(recipients, 2);
    let mails = stack.wait_mails(1, T).await;
    assert_eq!(subject(&mails[0]), "[telemetry] test mail");
    stack.stop().await;
}
