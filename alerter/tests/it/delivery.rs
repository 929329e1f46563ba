//! Exactly one mail: with two replicas, across a restart inside the cooldown, and through an SMTP outage.

use std::time::Duration;

use schema::alert::{Delivery, Kind};

use crate::harness::*;

const T: Duration = Duration::from_secs(30);
const KEY: &str = "failure_rate.app.docker";

#[tokio::test]
async fn two_replicas_send_one_mail() {
    let stack = Stack::start().await;
    stack.installs("nginx", "ok", 0, 150).await;
    stack.installs("docker", "bad", 20, 20).await;
    stack.wait_rollup("docker", 40).await;
    let a = stack.start_alerter(stack.alerter_config()).await;
    let b = stack.start_alerter(stack.alerter_config()).await;
    stack.wait_mails(1, T).await;
    stack
        .wait_record(KEY, |r| r.delivery == Delivery::Sent)
        .await;
    stack.still_mails(1, Duration::from_secs(3)).await;
    assert_eq!(stack.alert_events().await.len(), 1);
    a.stop().await.expect("alerter run");
    b.stop().await.expect("alerter run");
    stack.stop().await;
}

#[tokio::test]
async fn a_restart_inside_the_cooldown_sends_no_second_mail() {
    let stack = Stack::start().await;
    stack.installs("nginx", "ok", 0, 150).await;
    stack.installs("docker", "bad", 20, 20).await;
    stack.wait_rollup("docker", 40).await;
    let first = stack.start_alerter(stack.alerter_config()).await;
    stack.wait_mails(1, T).await;
    stack
        .wait_record(KEY, |r| r.delivery == Delivery::Sent)
        .await;
    first.stop().await.expect("alerter run");

    let second = stack.start_alerter(stack.alerter_config()).await;
    stack.still_mails(1, Duration::from_secs(3)).await;
    // The restarted replica is live: it sends the resolution...
    stack.installs("docker", "good", 0, 120).await;
    let mails = stack.wait_mails(2, T).await;
    assert!(subject(&mails[1]).starts_with("[telemetry] resolved: failure rate back to"));
    assert!(subject(&mails[1]).ends_with(": app \"docker\""));
    stack
        .wait_record(KEY, |r| {
            r.state == Kind::Resolved && r.delivery == Delivery::Sent
        })
        .await;
    // ... but a relapse inside the cooldown does not alert again (docker 50 / 190 = 26 %, all installs
    // 50 / 340 = 15 %).
    stack.installs("docker", "relapse", 30, 0).await;
    stack.wait_rollup("docker", 190).await;
    stack.still_mails(2, Duration::from_secs(3)).await;
    second.stop().await.expect("alerter run");
    stack.stop().await;
}

#[tokio::test]
async fn an_alert_fired_while_smtp_is_down_arrives_once_when_it_returns() {
    let mut stack = Stack::start().await;
    stack.smtp.stop();
    stack.installs("nginx", "ok", 0, 150).await;
    stack.installs("docker", "bad", 20, 20).await;
    stack.wait_rollup("docker", 40).await;
    let alerter = stack.start_alerter(stack.alerter_config()).await;
    stack
        .wait_record(KEY, |r| r.delivery == Delivery::Pending && r.attempts >= 2)
        .await;
    assert!(stack.mails().await.is_empty());
    stack.smtp.start_again().expect("smtp back");
    let mails = stack.wait_mails(1, T).await;
    assert!(subject(&mails[0]).starts_with("[telemetry] failure rate 50.0%"));
    stack
        .wait_record(KEY, |r| r.delivery == Delivery::Sent)
        .await;
    stack.still_mails(1, Duration::from_secs(3)).await;
    assert_eq!(stack.alert_events().await.len(), 1);
    alerter.stop().await.expect("alerter run");
    stack.stop().await;
}
