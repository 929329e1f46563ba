//! Hostile names cannot flood mail: a made-up app from one client mails nothing, and a burst of alerts
//! beyond the mail budget gives the budget's mails and one digest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

/// `n` failed installs of `app`, all from one client (the same `random_id`).
fn one_client(app: &str, n: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| {
            vec![format!(
                r#"{{"random_id":"one-host","execution_id":"{app}-{i}","type":"lxc","nsapp":"{app}","status":"failed","exit_code":100}}"#
            )]
        })
        .collect()
}

#[tokio::test]
async fn a_made_up_app_from_one_client_gets_no_mail() {
    let stack = Stack::start().await;
    stack.installs("nginx", "ok", 0, 150).await;
    stack.add(one_client("made-up-app", 10)).await;
    stack.wait_rollup("made-up-app", 10).await;
    let alerter = stack.start_alerter(stack.alerter_config()).await;
    // The same failures from ten clients do mail: the alerter is live and evaluated the made-up one.
    stack.installs("realapp", "bad", 10, 0).await;
    let mails = stack.wait_mails(1, T).await;
    assert_eq!(
        subject(&mails[0]),
        "[telemetry] failure rate 100.0% (10 failed of 10 decided) in 24h: app \"realapp\""
    );
    stack.still_mails(1, Duration::from_secs(2)).await;
    let events = stack.alert_events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subject, "realapp");
    alerter.stop().await.expect("alerter run");
    stack.stop().await;
}

/// Waits until the wall clock is just past a multiple of `period`, so a burst fits in one period.
async fn start_of_a_period(period: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let into = now % (period * 1000);
    if into > 200 {
        // Aligning to the clock, not waiting for something to happen.
        tokio::time::sleep(Duration::from_millis(period * 1000 - into + 100)).await;
    }
}

#[tokio::test]
async fn a_burst_beyond_the_budget_yields_the_budget_and_one_digest() {
    const APPS: usize = 6;
    const BUDGET: u32 = 2;
    const PERIOD: u64 = 15;
    let stack = Stack::start().await;
    // 60 failures of 460 installs: the global rate stays below the threshold.
    stack.installs("nginx", "ok", 0, 400).await;
    for i in 0..APPS {
        stack
            .installs(&format!("app-{i}"), &format!("bad{i}"), 10, 0)
            .await;
    }
    stack.wait_rollup(&format!("app-{}", APPS - 1), 10).await;
    let mut config = stack.alerter_config();
    config.alert_mail_budget_per_hour = BUDGET;
    config.alert_mail_budget_period_secs = PERIOD;
    start_of_a_period(PERIOD).await;
    let alerter = stack.start_alerter(config).await;

    let mails = stack.wait_mails(BUDGET as usize, T).await;
    for mail in &mails {
        assert!(subject(mail).starts_with("[telemetry] failure rate 100.0%"));
    }
    // Every alert is recorded, mailed or folded.
    crate::harness::poll_until_events(&stack, APPS).await;
    let mails = stack.wait_mails(BUDGET as usize + 1, T).await;
    let (digests, alerts): (Vec<&String>, Vec<&String>) = mails
        .iter()
        .partition(|m| subject(m).starts_with("[telemetry] digest: "));
    assert_eq!(
        (digests.len(), alerts.len()),
        (1, BUDGET as usize),
        "{mails:#?}"
    );
    let folded = APPS - BUDGET as usize;
    let digest = digests[0];
    assert!(
        subject(digest).starts_with(&format!(
            "[telemetry] digest: {folded} alert(s) beyond the mail budget of {BUDGET} from "
        )),
        "{digest}"
    );
    assert!(
        digest.matches("failure rate 100.0%").count() >= folded,
        "{digest}"
    );
    stack
        .still_mails(BUDGET as usize + 1, Duration::from_secs(3))
        .await;
    alerter.stop().await.expect("alerter run");
    stack.stop().await;
}
