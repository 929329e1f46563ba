//! The edge's HTTP rules: paths and methods, body limit, rate limiting by client behind trusted proxies
//! only, the stream's settings (an existing stream brought to them), a full stream refusing new events, metrics,
//! and that no client address reaches the stream.

use std::time::Duration;

use crate::harness::start_edge;
use testkit::{fixtures, sample, NatsServer};

#[tokio::test]
async fn paths_methods_and_health() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |_| {}).await;
    // POST / is an alias of /telemetry.
    let resp = edge
        .http
        .post(edge.url("/"))
        .body(fixtures::read_as("01_lxc_installing.json", "alias-1"))
        .send()
        .await
        .expect("post /");
    assert_eq!(resp.status(), 202);
    // The body is JSON whatever the Content-Type says.
    let resp = edge
        .http
        .post(edge.url("/telemetry"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fixtures::read_as("01_lxc_installing.json", "form-1"))
        .send()
        .await
        .expect("post form");
    assert_eq!(resp.status(), 202);
    for path in ["/telemetry", "/"] {
        let resp = edge.http.get(edge.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), 405, "{path}");
        assert_eq!(resp.headers()["allow"], "POST");
        let json: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(json["error"], "method_not_allowed");
    }
    let resp = edge.http.get(edge.url("/nope")).send().await.expect("get");
    assert_eq!(resp.status(), 404);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["error"], "not_found");
    let health = edge
        .http
        .get(edge.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = edge
        .http
        .get(edge.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["ready"], true);
    // Metrics are on the ops port only, next to its own probes.
    let public = edge
        .http
        .get(edge.url("/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(public.status(), 404, "GET /metrics on the public port");
    let ops = |path: &str| format!("http://{}{path}", edge.ops_addr);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let resp = edge.http.get(ops(path)).send().await.expect("ops");
        assert_eq!(resp.status(), 200, "GET {path} on the ops port");
    }
}

#[tokio::test]
async fn stream_is_created_with_the_contract_settings() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |c| c.stream_max_age_hours = 24).await;
    let mut stream = edge
        .js
        .get_stream(schema::names::EVENTS_STREAM)
        .await
        .expect("stream");
    let config = stream.info().await.expect("info").config.clone();
    assert_eq!(
        config.subjects,
        vec![schema::names::EVENTS_SUBJECTS.to_string()]
    );
    assert_eq!(config.duplicate_window, Duration::from_secs(120));
    assert_eq!(config.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(config.max_bytes, schema::names::DEFAULT_EVENTS_MAX_BYTES);
    // A second edge with other settings updates the stream instead of failing.
    let second = start_edge(&nats, |c| c.stream_max_age_hours = 48).await;
    let config = stream.info().await.expect("info").config.clone();
    assert_eq!(config.max_age, Duration::from_secs(48 * 3600));
    drop(second);
}

#[tokio::test]
async fn oversized_bodies_get_413_as_json() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |c| c.max_body_bytes = 4096).await;
    let answer = edge.post(vec![b' '; 5000]).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json["error"], "too_large");
    // Without a Content-Length (chunked), the limit still holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 1000])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let answer = edge.post(body).await;
    assert_eq!(answer.status, 413, "{}", answer.json);
    assert_eq!(answer.json["error"], "too_large");
    // The corpus's 306 KB body against the default limit.
    let edge = start_edge(&nats, |_| {}).await;
    let answer = edge.post(fixtures::read("bad_07_huge_body.json")).await;
    assert_eq!(answer.status, 413);
    assert!(edge.stored().await.is_empty());
    let metrics = edge.metrics().await;
    assert!(
        sample(
            &metrics,
            "telemetry_ingest_rejected_total{reason=\"too_large\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn rate_limit_keys_on_the_client_behind_trusted_proxies_only() {
    let nats = NatsServer::start().expect("nats");
    // The test's peer is 127.0.0.1, a trusted proxy by default.
    let edge = start_edge(&nats, |c| {
        c.rate_limit_rpm = 60;
        c.rate_burst = 2;
    })
    .await;
    let post = |n: usize, xff: &'static str| {
        let edge = &edge;
        async move {
            edge.post_with(
                fixtures::read_as(
                    "02_lxc_progress_validation_host.json",
                    &format!("rl-{xff}-{n}"),
                ),
                &[("x-forwarded-for", xff)],
            )
            .await
        }
    };
    assert_eq!(post(1, "198.51.100.1").await.status, 202);
    assert_eq!(post(2, "198.51.100.1").await.status, 202);
    let limited = post(3, "198.51.100.1").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json["error"], "rate_limited");
    let retry: u64 = limited
        .retry_after
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    // Another user behind the same proxy is not affected: the proxy is not the client.
    assert_eq!(post(4, "198.51.100.2").await.status, 202);

    // When the peer is not a trusted proxy, X-Forwarded-For is ignored: one bucket for all.
    let strict = start_edge(&nats, |c| {
        c.rate_limit_rpm = 60;
        c.rate_burst = 2;
        c.trusted_proxies_cidr = vec!["10.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for (n, xff) in ["198.51.100.5", "198.51.100.6", "198.51.100.7"]
            .iter()
            .enumerate()
        {
            out.push(
                strict
                    .post_with(
                        fixtures::read_as(
                            "02_lxc_progress_validation_host.json",
                            &format!("strict-{n}"),
                        ),
                        &[("x-forwarded-for", xff)],
                    )
                    .await
                    .status,
            );
        }
        out
    };
    assert_eq!(statuses, [202, 202, 429]);
    let metrics = strict.metrics().await;
    assert!(
        sample(&metrics, "telemetry_ingest_rate_limited_total") >= 2.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn no_client_address_reaches_the_stream() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |_| {}).await;
    let answer = edge
        .post_with(
            fixtures::read_as("11_addon_failed.json", "privacy-1"),
            &[
                ("x-forwarded-for", "198.51.100.77"),
                ("user-agent", "curl/8.0"),
            ],
        )
        .await;
    assert_eq!(answer.status, 202);
    let stored = edge.stored().await;
    assert_eq!(stored.len(), 1);
    let payload = String::from_utf8_lossy(&stored[0].payload);
    assert!(!payload.contains("198.51.100.77"));
    assert!(!payload.contains("127.0.0.1"));
    assert!(!payload.contains("curl/8.0"));
    let header_names: Vec<String> = stored[0]
        .headers
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(header_names, ["Nats-Msg-Id"]);
    // The answer's id is the stored event's id.
    let event: schema::Event = serde_json::from_slice(&stored[0].payload).expect("event");
    assert_eq!(answer.json["id"], event.event_id.to_string());
}

#[tokio::test]
async fn metrics_count_rejections_rescues_and_publish_latency() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |_| {}).await;
    assert_eq!(
        edge.post(fixtures::read_as("bad_02_numeric_unit_suffix.json", "m-1"))
            .await
            .status,
        202
    );
    assert_eq!(
        edge.post(fixtures::read_as("bad_04_raw_control_chars.json", "m-2"))
            .await
            .status,
        202
    );
    assert_eq!(
        edge.post(fixtures::read_as("bad_09_wrong_types.json", "m-3"))
            .await
            .status,
        400
    );
    assert_eq!(
        edge.post(fixtures::read_as("bad_11_truncated.json", "m-4"))
            .await
            .status,
        400
    );
    assert_eq!(
        edge.post(&b"{\"random_id\":\"m-5\",\"type\":\"lxc\",\"nsapp\":\"x\"}"[..])
            .await
            .status,
        400
    );
    assert_eq!(
        edge.post(fixtures::read_as("12_lxc_failed_sigint_host.json", "m-6"))
            .await
            .status,
        202
    );
    let m = edge.metrics().await;
    assert_eq!(sample(&m, "telemetry_ingest_accepted_total"), 3.0, "{m}");
    assert_eq!(
        sample(&m, "telemetry_ingest_rescued_total{kind=\"unit_suffix\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "telemetry_ingest_rescued_total{kind=\"control_chars\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "telemetry_ingest_rejected_total{reason=\"invalid_field\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "telemetry_ingest_rejected_total{reason=\"invalid_json\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "telemetry_ingest_rejected_total{reason=\"missing_field\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "telemetry_ingest_reclassified_total{to=\"aborted\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "telemetry_ingest_publish_seconds_count"),
        3.0,
        "{m}"
    );
    assert_eq!(sample(&m, "telemetry_ingest_broker_connected"), 1.0, "{m}");
}

#[tokio::test]
async fn an_existing_stream_that_drops_old_events_is_switched_to_refuse_new_ones() {
    use async_nats::jetstream::stream::DiscardPolicy;
    let nats = NatsServer::start().expect("nats");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let mut old = fleet::nats::stream_config(&schema::names::events_stream(
        schema::names::DEFAULT_EVENTS_MAX_AGE,
        schema::names::DEFAULT_EVENTS_MAX_BYTES,
        1,
    ));
    old.discard = DiscardPolicy::Old;
    let mut stream = js.create_stream(old).await.expect("create");
    assert_eq!(
        stream.info().await.expect("info").config.discard,
        DiscardPolicy::Old
    );

    let _edge = start_edge(&nats, |_| {}).await;
    let config = stream.info().await.expect("info").config.clone();
    assert_eq!(config.discard, DiscardPolicy::New);
    assert_eq!(
        config.retention,
        async_nats::jetstream::stream::RetentionPolicy::Limits
    );
}

#[tokio::test]
async fn a_full_stream_refuses_new_events_with_503_and_keeps_every_acknowledged_one() {
    let nats = NatsServer::start().expect("nats");
    // Room for a handful of events.
    let edge = start_edge(&nats, |c| c.stream_max_bytes = 8 * 1024).await;
    // The cap is in a gauge, for the alert that warns before it is reached.
    testkit::poll_until(
        "the stream's cap is in its gauge",
        Duration::from_secs(10),
        async || sample(&edge.metrics().await, "telemetry_ingest_stream_max_bytes") == 8192.0,
    )
    .await;
    assert!(edge
        .metrics()
        .await
        .contains("telemetry_ingest_stream_bytes "));
    let mut accepted = Vec::new();
    let refused = loop {
        let id = format!("fill-{}", accepted.len());
        let answer = edge
            .post(fixtures::read_as("01_lxc_installing.json", &id))
            .await;
        if answer.status != 202 {
            break answer;
        }
        accepted.push(id);
        assert!(accepted.len() < 100, "the stream never filled");
    };
    assert!(accepted.len() >= 2, "{accepted:?}");
    assert_eq!(refused.status, 503, "{}", refused.json);
    assert_eq!(refused.json["error"], "unavailable");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert!(refused.took < Duration::from_secs(1), "{:?}", refused.took);
    // Refused again, each one counted.
    let again = edge
        .post(fixtures::read_as("01_lxc_installing.json", "again"))
        .await;
    assert_eq!(again.status, 503);
    let m = edge.metrics().await;
    assert_eq!(
        sample(&m, "telemetry_ingest_shed_total{reason=\"stream_full\"}"),
        2.0,
        "{m}"
    );
    // Nothing acknowledged was evicted to make room.
    let stored = edge.stored_ids().await;
    assert_eq!(stored, accepted);

    // Room comes back when old events go (here a purge; in service, age): accepted again.
    let stream = edge
        .js
        .get_stream(schema::names::EVENTS_STREAM)
        .await
        .expect("stream");
    stream.purge().await.expect("purge");
    let after = edge
        .post(fixtures::read_as("01_lxc_installing.json", "after-purge"))
        .await;
    assert_eq!(after.status, 202, "{}", after.json);
}
