//! The web's admin requests to a real aggregator over NATS request–reply: the status counts a stuck
//! install, a cleanup round times it out at once (one synthetic event, counted in `updated`), and with
//! cleanup off nothing is timed out.

use std::time::Duration;

use schema::admin::{CleanupRun, CleanupStatus, Reply};
use schema::names;
use testkit::fixtures::body;
use testkit::{poll_until, NatsServer};

use crate::harness::*;
use crate::stuck::events_of;

async fn ask<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &'static str,
) -> Result<T, String> {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject, Vec::new().into()),
    )
    .await
    .map_err(|_| format!("{subject}: no reply"))?
    .map_err(|e| format!("{subject}: {e}"))?;
    match serde_json::from_slice::<Reply<T>>(&reply.payload) {
        Ok(Reply::Ok(value)) => Ok(value),
        Ok(Reply::Err { error }) => Err(error),
        Err(e) => Err(format!("{subject}: {e}")),
    }
}

async fn client(nats_url: &str) -> async_nats::Client {
    let client = fleet::nats::connect(nats_url, "test-admin")
        .await
        .expect("connect");
    fleet::nats::wait_connected(&client).await;
    client
}

#[tokio::test]
async fn a_cleanup_round_on_request_times_out_a_stuck_install() {
    let nats = NatsServer::start().expect("nats");
    let js = jetstream(&nats.url()).await;
    let admin = client(&nats.url()).await;
    let aggregator = start_aggregator(&nats.url(), |c| {
        c.stuck_after = "3s".parse().expect("span");
        // The periodic round runs once at the first publish, before the install is stuck, then not for
        // hours: only the request times it out.
        c.cleanup_interval_min = Some(600.0);
    })
    .await;
    let status: CleanupStatus = poll_until(
        "the aggregator answers",
        Duration::from_secs(30),
        async || ask::<CleanupStatus>(&admin, names::ADMIN_CLEANUP_STATUS_SUBJECT).await,
    )
    .await;
    assert_eq!(
        status,
        CleanupStatus {
            stuck_count: 0,
            stuck_after_hours: 3.0 / 3600.0,
            check_interval: 600.0,
            enabled: true,
        }
    );
    publish_all(
        &js,
        &[
            accept(&body("stuck-1", "docker", "installing", "")),
            accept(&body("done-1", "docker", "installing", "")),
            accept(&body("done-1", "docker", "success", "")),
        ],
    )
    .await;
    poll_until(
        "the install counts as stuck",
        Duration::from_secs(30),
        async || {
            let status = ask::<CleanupStatus>(&admin, names::ADMIN_CLEANUP_STATUS_SUBJECT).await?;
            (status.stuck_count == 1)
                .then_some(())
                .ok_or(format!("{status:?}"))
        },
    )
    .await;
    assert!(
        events_of(&js, "stuck-1").await.iter().all(|e| !e.synthetic),
        "timed out before the request"
    );

    let run: CleanupRun = ask(&admin, names::ADMIN_CLEANUP_RUN_SUBJECT)
        .await
        .expect("cleanup run");
    assert_eq!(run.updated, 1, "{run:?}");
    let synthetic: Vec<_> = events_of(&js, "stuck-1")
        .await
        .into_iter()
        .filter(|e| e.synthetic)
        .collect();
    assert_eq!(
        synthetic.len(),
        1,
        "the timeout is in the stream when the reply comes"
    );
    assert!(events_of(&js, "done-1").await.iter().all(|e| !e.synthetic));
    poll_until(
        "the timeout folded in",
        Duration::from_secs(30),
        async || {
            let status = ask::<CleanupStatus>(&admin, names::ADMIN_CLEANUP_STATUS_SUBJECT).await?;
            (status.stuck_count == 0)
                .then_some(())
                .ok_or(format!("{status:?}"))
        },
    )
    .await;
    // A second round right after finds nothing to do.
    let again: CleanupRun = ask(&admin, names::ADMIN_CLEANUP_RUN_SUBJECT)
        .await
        .expect("cleanup run");
    assert_eq!(again.updated, 0, "{again:?}");
    aggregator.stop().await;

    // Stopped with its service: nobody answers any more.
    let unanswered = tokio::time::timeout(
        Duration::from_secs(2),
        admin.request(names::ADMIN_CLEANUP_STATUS_SUBJECT, Vec::new().into()),
    )
    .await;
    assert!(
        !matches!(unanswered, Ok(Ok(_))),
        "a stopped aggregator still answers"
    );
}

#[tokio::test]
async fn with_cleanup_off_a_request_times_out_nothing() {
    let nats = NatsServer::start().expect("nats");
    let js = jetstream(&nats.url()).await;
    let admin = client(&nats.url()).await;
    let aggregator = start_aggregator(&nats.url(), |c| {
        c.stuck_after = "1s".parse().expect("span");
        c.cleanup_enabled = false;
    })
    .await;
    publish_all(&js, &[accept(&body("stuck-2", "docker", "installing", ""))]).await;
    let status = poll_until(
        "the install counts as stuck",
        Duration::from_secs(30),
        async || {
            let status = ask::<CleanupStatus>(&admin, names::ADMIN_CLEANUP_STATUS_SUBJECT).await?;
            (status.stuck_count == 1)
                .then_some(status.clone())
                .ok_or(format!("{status:?}"))
        },
    )
    .await;
    assert!(!status.enabled);
    let run: CleanupRun = ask(&admin, names::ADMIN_CLEANUP_RUN_SUBJECT)
        .await
        .expect("cleanup run");
    assert_eq!(run.updated, 0);
    assert!(run.message.contains("CLEANUP_ENABLED=false"), "{run:?}");
    assert!(events_of(&js, "stuck-2").await.iter().all(|e| !e.synthetic));
    aggregator.stop().await;
}
