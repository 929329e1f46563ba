//! Transient errors are not bad data: while PocketBase answers 503, 429, or the 400 it gives when its
//! database failed (no field error: "Failed to create record.", a batch whose request failed that way),
//! the writer holds the batch and retries; once PocketBase answers again every event is stored and
//! nothing reaches the dead-letter stream. PocketBase is real, behind a proxy that fails its writes on
//! demand. (ClickHouse down: `faults.rs`.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use testkit::pocketbase::PocketBaseServer;
use testkit::{poll_until, NatsServer};

use crate::harness::*;

/// PocketBase's answer when its database failed a create (no field errors in `data`).
const FAILED_CREATE: &str = r#"{"status":400,"message":"Failed to create record.","data":{}}"#;
/// The batch API's answer when one request failed that way.
const FAILED_BATCH: &str = r#"{"status":400,"message":"Batch transaction failed.","data":{"requests":{"0":{"code":"batch_request_failed","message":"Batch request failed.","response":{"status":400,"message":"Failed to create record.","data":{}}}}}}"#;

/// Forwards to the real PocketBase; while `failing`, answers every write (but the login) with a
/// transient answer: 503, then 429, then the database failures.
struct Flaky {
    real: String,
    http: reqwest::Client,
    failing: AtomicBool,
    refused: AtomicUsize,
}

async fn proxy(
    State(flaky): State<Arc<Flaky>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let write = method == Method::POST || method == Method::PATCH || method == Method::DELETE;
    if write && !uri.path().ends_with("/auth-with-password") && flaky.failing.load(Ordering::SeqCst)
    {
        let n = flaky.refused.fetch_add(1, Ordering::SeqCst);
        // A few of each, then the database failures for as long as the outage lasts (long enough
        // for a batch to be split down to single events, each refused again and again).
        let (status, body) = match n {
            0..3 => (StatusCode::SERVICE_UNAVAILABLE, "{}"),
            3..6 => (StatusCode::TOO_MANY_REQUESTS, "{}"),
            _ if n % 2 == 0 => (StatusCode::BAD_REQUEST, FAILED_CREATE),
            _ => (StatusCode::BAD_REQUEST, FAILED_BATCH),
        };
        return (status, [("content-type", "application/json")], body).into_response();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = flaky
        .http
        .request(method, format!("{}{path}", flaky.real))
        .body(body);
    for name in ["authorization", "content-type"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Messages in the dead-letter stream (0 when it does not exist).
async fn dead_letters(js: &jetstream::Context) -> u64 {
    match js.get_stream(schema::names::DLQ_STREAM).await {
        Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_pocketbase_answers_are_retried_and_never_dead_lettered() {
    let nats = NatsServer::start().expect("nats");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let js = jetstream(&nats).await;
    event_stream(&js).await;
    let flaky = Arc::new(Flaky {
        real: pb.url(),
        http: reqwest::Client::new(),
        failing: AtomicBool::new(false),
        refused: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .fallback(proxy)
        .with_state(flaky.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = config(&nats, None, Some(&pb));
    config.pb_url = proxy_url;
    let writer = start_writer(config.clone()).await;
    let status = writer.statuses.pocketbase.clone();
    poll_until(
        "the writer holds the lease",
        Duration::from_secs(30),
        async || status.up.load(Ordering::Relaxed) && status.active.load(Ordering::Relaxed),
    )
    .await;

    flaky.failing.store(true, Ordering::SeqCst);
    let events = simulated(30, 12, time::OffsetDateTime::now_utc());
    publish(&js, &events).await;
    poll_until(
        "every kind of transient answer, several times",
        Duration::from_secs(60),
        async || flaky.refused.load(Ordering::SeqCst) >= 30,
    )
    .await;
    assert_eq!(status.written.load(Ordering::Relaxed), 0);
    assert!(status.retries.load(Ordering::Relaxed) > 0);
    flaky.failing.store(false, Ordering::SeqCst);

    let reader = pb_reader(&config);
    let all = expected(&events);
    poll_until(
        "every install stored",
        Duration::from_secs(60),
        async || pb_all_merged(&reader.records().await.unwrap_or_default(), &all),
    )
    .await;
    for record in reader.records().await.expect("records") {
        check_pb_record(&record, &all[record["execution_id"].as_str().expect("id")]);
    }
    assert_eq!(status.dead_letters.load(Ordering::Relaxed), 0);
    assert_eq!(dead_letters(&js).await, 0);
    writer.shutdown().await;
    server.abort();
}
