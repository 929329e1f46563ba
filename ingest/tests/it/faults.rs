//! The edge when things go wrong: the broker down or restarted, the broker frozen (publish timeouts and
//! the in-flight cap), slow clients, and a shutdown with a publish still in flight.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{start_edge, Edge};
use testkit::{fixtures, poll_until, sample, NatsServer};

async fn wait_in_flight(edge: &Edge, n: f64) {
    poll_until(
        &format!("in-flight at {n}"),
        Duration::from_secs(60),
        async || sample(&edge.metrics().await, "telemetry_ingest_in_flight") == n,
    )
    .await
}

#[tokio::test]
async fn broker_down_answers_503_fast_and_recovers_by_itself() {
    let mut nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |_| {}).await;
    assert_eq!(
        edge.post(fixtures::read_as("01_lxc_installing.json", "before"))
            .await
            .status,
        202
    );

    nats.kill();
    edge.wait_ready(false).await;
    let answer = edge
        .post(fixtures::read_as("01_lxc_installing.json", "during"))
        .await;
    assert_eq!(answer.status, 503, "{}", answer.json);
    assert_eq!(answer.json["error"], "unavailable");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert!(
        answer.took < Duration::from_millis(500),
        "{:?}",
        answer.took
    );

    nats.restart().expect("restart");
    edge.wait_ready(true).await;
    assert_eq!(
        edge.post(fixtures::read_as("01_lxc_installing.json", "after"))
            .await
            .status,
        202
    );
    let ids = edge.stored_ids().await;
    assert_eq!(ids, ["before", "after"]);
}

#[tokio::test]
async fn a_frozen_broker_fills_the_in_flight_cap_and_the_excess_is_shed_at_once() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |c| {
        c.max_in_flight = 1;
        // The first publish waits for its ack until the broker thaws, whatever the machine's load.
        c.publish_timeout_ms = 120_000;
        c.request_timeout_ms = 120_000;
    })
    .await;
    nats.pause().expect("pause");
    let first = edge.post(fixtures::read_as("01_lxc_installing.json", "slow-1"));
    let second = async {
        wait_in_flight(&edge, 1.0).await;
        let second = edge
            .post(fixtures::read_as("01_lxc_installing.json", "slow-2"))
            .await;
        // Only now does the broker thaw: the first held the only permit until the second was answered.
        nats.resume().expect("resume");
        second
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(second.status, 503, "{}", second.json);
    assert_eq!(second.retry_after.as_deref(), Some("1"));
    // The first's publish was acked once the broker thawed.
    assert_eq!(first.status, 202, "{}", first.json);
    let m = edge.metrics().await;
    let shed = |reason: &str| {
        sample(
            &m,
            &format!("telemetry_ingest_shed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(shed("in_flight"), 1.0, "{m}");
    assert_eq!(shed("publish_timeout"), 0.0, "{m}");
    wait_in_flight(&edge, 0.0).await;
    let ids = edge.stored_ids().await;
    assert_eq!(ids, ["slow-1"]);
}

#[tokio::test]
async fn a_frozen_broker_is_answered_503_at_the_publish_timeout() {
    let nats = NatsServer::start().expect("nats");
    let timeout = Duration::from_millis(1000);
    let edge = start_edge(&nats, |c| c.publish_timeout_ms = timeout.as_millis() as u64).await;
    nats.pause().expect("pause");
    let frozen = edge
        .post(fixtures::read_as("01_lxc_installing.json", "frozen"))
        .await;
    assert_eq!(frozen.status, 503, "{}", frozen.json);
    assert_eq!(frozen.retry_after.as_deref(), Some("1"));
    // It waited for the ack until the timeout ran out (never less), and answered well before the
    // harness's 10 s client deadline.
    assert!(
        frozen.took >= timeout && frozen.took < Duration::from_secs(10),
        "{:?}",
        frozen.took
    );
    nats.resume().expect("resume");
    let after = edge
        .post(fixtures::read_as("01_lxc_installing.json", "thawed"))
        .await;
    assert_eq!(after.status, 202, "{}", after.json);
    let m = edge.metrics().await;
    assert_eq!(
        sample(
            &m,
            "telemetry_ingest_shed_total{reason=\"publish_timeout\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn slow_clients_cannot_hold_a_connection() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |c| {
        c.header_read_timeout_ms = 300;
        c.request_timeout_ms = 500;
    })
    .await;
    // Connects and sends nothing: closed after the header deadline.
    let mut idle = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "idle connection still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Sends headers and part of the body, then stalls: 408 as JSON after the request deadline.
    let mut stalled = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    stalled
        .write_all(
            b"POST /telemetry HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"random_id\":",
        )
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("answer within 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn shutdown_drains_the_publish_in_flight() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |c| c.publish_timeout_ms = 4000).await;
    let js = edge.js.clone();
    let addr = edge.addr;
    nats.pause().expect("pause");
    let http = edge.http.clone();
    let pending = tokio::spawn(async move {
        http.post(format!("http://{addr}/telemetry"))
            .body(fixtures::read_as("01_lxc_installing.json", "draining"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    wait_in_flight(&edge, 1.0).await;
    let resume = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        nats.resume().expect("resume");
    };
    let (took, ()) = tokio::join!(edge.shutdown(), resume);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        pending.await.expect("join").expect("answered, not reset"),
        202
    );
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let mut stream = js
        .get_stream(schema::names::EVENTS_STREAM)
        .await
        .expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
}

/// Opens a connection that announces an upload of `len` bytes, sends `sent` bytes of it, then stalls.
async fn stalled_upload(edge: &Edge, len: usize, sent: usize) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /telemetry HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&vec![b' '; sent]).await.expect("write");
    stream
}

#[tokio::test]
async fn slow_uploads_spend_the_body_budget_and_further_requests_get_503_at_once() {
    const TRICKLING: usize = 50;
    const SLOW: usize = 16;
    const SENT: usize = 2000;
    const BUDGET: usize = TRICKLING + SLOW * SENT;
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |c| {
        c.max_body_bytes = 4096;
        c.max_body_bytes_in_flight = BUDGET;
        c.request_timeout_ms = 60_000;
    })
    .await;
    let gauge = "telemetry_ingest_body_bytes_in_flight";
    let held = async |bytes: usize, what: &str| {
        poll_until(what, Duration::from_secs(60), async || {
            sample(&edge.metrics().await, gauge) == bytes as f64
        })
        .await
    };

    // Uploads that announce the largest body and trickle: they hold what they sent, not what they
    // announced, and starve nobody.
    let mut trickling = Vec::new();
    for _ in 0..TRICKLING {
        trickling.push(stalled_upload(&edge, 4096, 1).await);
    }
    held(TRICKLING, "the trickling uploads hold a byte each").await;
    let answer = edge
        .post(fixtures::read_as(
            "01_lxc_installing.json",
            "beside-trickles",
        ))
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);

    // Uploads that sent most of their bodies spend the rest of the budget.
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        slow.push(stalled_upload(&edge, 4096, SENT).await);
    }
    held(BUDGET, "the slow uploads hold the whole body budget").await;

    // The budget is spent: a normal event is shed at once instead of waiting for it.
    let answer = edge
        .post(fixtures::read_as("01_lxc_installing.json", "while-full"))
        .await;
    assert_eq!(answer.status, 503, "{}", answer.json);
    assert_eq!(answer.json["error"], "unavailable");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert!(
        answer.took < Duration::from_millis(1000),
        "{:?}",
        answer.took
    );
    // A chunked body (no Content-Length) too.
    let chunked = edge
        .http
        .post(edge.url("/telemetry"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter([Ok::<
            _,
            std::io::Error,
        >(
            fixtures::read_as("01_lxc_installing.json", "chunked"),
        )])))
        .send()
        .await
        .expect("chunked");
    assert_eq!(chunked.status(), 503);
    let m = edge.metrics().await;
    assert_eq!(
        sample(&m, "telemetry_ingest_shed_total{reason=\"body_bytes\"}"),
        2.0,
        "{m}"
    );

    // One slow upload ends: room for normal events again.
    drop(slow.pop());
    held(BUDGET - SENT, "one slow upload's bytes are given back").await;
    let answer = edge
        .post(fixtures::read_as("01_lxc_installing.json", "after-one"))
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);

    drop(slow);
    drop(trickling);
    held(0, "every upload's bytes are given back").await;
    let answer = edge
        .post(fixtures::read_as("01_lxc_installing.json", "after-all"))
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let ids = edge.stored_ids().await;
    assert_eq!(ids, ["beside-trickles", "after-one", "after-all"]);
}
