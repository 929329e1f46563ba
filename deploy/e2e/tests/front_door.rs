//! The front door (nginx with `deploy/proxy/`) in front of real services: nats-server and ClickHouse from
//! the testkit, the edge, the ClickHouse writer and the web in this process. Through the door, every
//! corpus payload gets the answer the edge gives directly, the dashboard counts the installs sent
//! through it, metrics are served to private ranges only (from the web's ops port), and the edge's rate limit keys on the client nginx saw, not on
//! an X-Forwarded-For the client made up.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;
use testkit::clickhouse::ClickHouseServer;
use testkit::nginx::FrontDoor;
use testkit::{fixtures, poll_until_every, NatsServer, Service};

/// How often the waits below look again (each look is an HTTP request).
const POLL: Duration = Duration::from_millis(200);

/// One answer: status, `Retry-After`, and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    json: Value,
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.unwrap_or_default();
    Answer {
        status,
        retry_after,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>, forwarded: Option<&str>) -> Answer {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(xff) = forwarded {
        request = request.header("x-forwarded-for", xff);
    }
    answer(
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}")),
    )
    .await
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String, String) {
    let resp = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let path = resp.url().path().to_string();
    (status, path, resp.text().await.unwrap_or_default())
}

fn client(local: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .local_address(local)
        .build()
        .expect("http client")
}

/// The edge in this process, ready (stream created) when this returns.
async fn start_ingest(
    nats_url: &str,
    tweak: impl FnOnce(&mut ingest::Config),
    metrics: Option<PrometheusHandle>,
) -> (SocketAddr, Service) {
    let mut config = ingest::Config::for_nats(nats_url);
    let ops_port = testkit::free_port().expect("free port");
    config.ops_addr = SocketAddr::from(([127, 0, 0, 1], ops_port));
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let nats = fleet::nats::connect(nats_url, "test-ingest")
        .await
        .expect("connect");
    let service = Service::spawn(|stop| ingest::run(config, listener, nats, metrics, stop));
    let http = client(None);
    poll_until_every(
        "the edge is ready",
        Duration::from_secs(30),
        POLL,
        async || {
            http.get(format!("http://{addr}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
    (addr, service)
}

/// The corpus files, in name order.
fn corpus() -> Vec<(String, Vec<u8>)> {
    fixtures::names()
        .into_iter()
        .map(|name| {
            let body = fixtures::read(&name);
            (name, body)
        })
        .collect()
}

/// The install a body belongs to, as the edge keys it: `execution_id`, else `random_id`. Read from the
/// raw bytes, because several corpus bodies are not valid JSON.
fn install_of(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    ["\"execution_id\"", "\"random_id\""]
        .iter()
        .find_map(|key| {
            let rest = &text[text.find(key)? + key.len()..];
            let rest = rest.trim_start().strip_prefix(':')?.trim_start();
            let value = rest.strip_prefix('"')?;
            Some(value[..value.find('"')?].to_string())
        })
}

/// `body` with every occurrence of `from` replaced by `to`.
fn replace(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    String::from_utf8(body.to_vec())
        .expect("utf-8 fixture")
        .replace(from, to)
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_and_the_dashboard_go_through_the_front_door() {
    let nats = NatsServer::start().expect("nats-server");
    let clickhouse = ClickHouseServer::start().expect("clickhouse-server");
    // One recorder per process; the edge and the web render the same one.
    let metrics = web::metrics::install_recorder().expect("metrics recorder");

    let (ingest_addr, ingest) =
        start_ingest(&nats.url(), |c| c.rate_limit_rpm = 0, Some(metrics.clone())).await;

    let mut writer_config = writer::Config::for_nats(&nats.url());
    writer_config.sink = writer::config::SinkChoice::Clickhouse;
    writer_config.clickhouse_url = clickhouse.url();
    writer_config.batch_max_wait_ms = 50;
    let writer_nats = fleet::nats::connect(&nats.url(), "test-writer")
        .await
        .expect("connect");
    let writer = Service::spawn(|stop| {
        writer::run(
            writer_config,
            writer_nats,
            None,
            writer::Statuses::default(),
            stop,
        )
    });

    let mut web_config = web::Config::for_servers(&clickhouse.url(), &nats.url());
    web_config.cache_warmup = false;
    web_config.cache_ttl_secs = 1;
    web_config.cache_max_stale_secs = 1;
    let web_ops_port = testkit::free_port().expect("free port");
    web_config.ops_addr = SocketAddr::from(([127, 0, 0, 1], web_ops_port));
    let web_ops = web_config.ops_addr;
    let listener = tokio::net::TcpListener::bind(web_config.listen_addr)
        .await
        .expect("bind");
    let web_addr = listener.local_addr().expect("addr");
    let web_nats = fleet::nats::connect(&nats.url(), "test-web")
        .await
        .expect("connect");
    let web = Service::spawn(|stop| web::run(web_config, listener, web_nats, Some(metrics), stop));
    let http = client(None);
    // The web is ready once the writer's migrations made the tables it reads.
    poll_until_every(
        "the web is ready",
        Duration::from_secs(60),
        POLL,
        async || {
            http.get(format!("http://{web_addr}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;

    let door = FrontDoor::start_with_ops(ingest_addr, web_addr, web_ops).expect("nginx front door");
    let front = door.url();
    let edge = format!("http://{ingest_addr}");

    // Every corpus payload through the door, then straight to the edge: the same answer. The door's
    // copy comes first, so what is stored came through the door (the edge's copy is a duplicate).
    let mut installs = BTreeSet::new();
    let corpus = corpus();
    assert!(corpus.len() >= 20, "the corpus is there: {}", corpus.len());
    for (name, body) in &corpus {
        let through = post(&http, &format!("{front}/telemetry"), body.clone(), None).await;
        let direct = post(&http, &format!("{edge}/telemetry"), body.clone(), None).await;
        assert_eq!(
            through.status, direct.status,
            "{name}: through the door {through:?}, straight to the edge {direct:?}"
        );
        if through.status == 202 {
            let status = through.json["status"].as_str().unwrap_or_default();
            assert!(
                ["accepted", "duplicate"].contains(&status),
                "{name}: {through:?}"
            );
            assert_eq!(direct.json["status"], "duplicate", "{name}: {direct:?}");
            installs.insert(install_of(body).unwrap_or_else(|| panic!("{name}: no id")));
        } else {
            // The edge's own error, not one of nginx's pages: same JSON, field for field.
            assert!(through.json.is_object(), "{name}: {through:?}");
            assert_eq!(through.json, direct.json, "{name}");
        }
    }
    assert!(installs.len() >= 5, "installs accepted: {installs:?}");

    // POST / is the scripts' alias: a new install through it.
    let first = corpus
        .iter()
        .find(|(n, _)| n.starts_with("01_"))
        .expect("01_lxc_installing.json");
    let original = install_of(&first.1).expect("id");
    let root_body = replace(&first.1, &original, "front-door-root-alias");
    let through = post(&http, &format!("{front}/"), root_body.clone(), None).await;
    assert_eq!(through.status, 202, "POST / through the door: {through:?}");
    assert_eq!(through.json["status"], "accepted", "{through:?}");
    let direct = post(&http, &format!("{edge}/"), root_body, None).await;
    assert_eq!(direct.json["status"], "duplicate", "{direct:?}");
    installs.insert("front-door-root-alias".to_string());

    // Another method on /telemetry is the edge's 405, in JSON.
    let (status, _, text) = get(&http, &format!("{front}/telemetry")).await;
    assert_eq!(status, 405, "GET /telemetry through the door: {text}");
    assert!(text.contains("method_not_allowed"), "{text}");

    // The dashboard through the door: the pages, and the JSON total once the writer stored them.
    let (status, path, text) = get(&http, &format!("{front}/")).await;
    assert_eq!(
        (status, path.as_str()),
        (200, "/"),
        "GET / through the door: {text:.300}"
    );
    assert!(text.contains("<html"), "{text:.300}");
    let (status, _, text) = get(&http, &format!("{front}/dashboard")).await;
    assert_eq!(status, 200, "GET /dashboard through the door: {text:.300}");
    assert!(text.contains("<html"), "{text:.300}");
    let want = installs.len() as u64;
    let mut last = Value::Null;
    poll_until_every(
        &format!("the dashboard counts the {want} installs sent"),
        Duration::from_secs(60),
        POLL,
        async || {
            let (status, _, text) =
                get(&http, &format!("{front}/api/dashboard?days=1&repo=all")).await;
            assert_eq!(
                status, 200,
                "GET /api/dashboard through the door: {text:.300}"
            );
            last = serde_json::from_str(&text).expect("dashboard JSON");
            last["total_installs"].as_u64() == Some(want)
        },
    )
    .await;
    assert_eq!(last["total_installs"], want, "{installs:?}");
    let (status, _, text) = get(&http, &format!("{front}/healthz")).await;
    assert_eq!(status, 200, "GET /healthz through the door: {text}");

    // Metrics are on the ops ports only, never on the public ones. Through the door, /metrics answers
    // the private ranges (this client is on loopback) with the web's metrics, from its ops port.
    let (status, _, text) = get(&http, &format!("{edge}/metrics")).await;
    assert_eq!(
        status, 404,
        "GET /metrics on the edge's public port: {text:.300}"
    );
    let (status, _, text) = get(&http, &format!("http://{web_addr}/metrics")).await;
    assert_eq!(
        status, 404,
        "GET /metrics on the web's public port: {text:.300}"
    );
    let (status, _, web_metrics) = get(&http, &format!("http://{web_ops}/metrics")).await;
    assert_eq!(status, 200);
    assert!(web_metrics.contains("telemetry_web_"), "{web_metrics:.300}");
    let (status, _, text) = get(&http, &format!("{front}/metrics")).await;
    assert_eq!(
        status, 200,
        "GET /metrics through the door from loopback: {text:.300}"
    );
    assert!(text.contains("telemetry_web_"), "{text:.300}");
    // The door's own readiness, answered by nginx whatever the services say.
    let (status, _, text) = get(&http, &format!("{front}/readyz")).await;
    assert_eq!((status, text.trim()), (200, r#"{"status":"ok"}"#));

    web.stop().await.expect("web run");
    writer.stop().await.expect("writer run");
    ingest.stop().await.expect("ingest run");
    drop(door);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_keys_on_the_address_nginx_saw() {
    let nats = NatsServer::start().expect("nats-server");
    // Two requests per client, then no more for a minute; only nginx (127.0.0.1) is a trusted proxy.
    let (ingest_addr, ingest) = start_ingest(
        &nats.url(),
        |c| {
            c.rate_limit_rpm = 1;
            c.rate_burst = 2;
            c.trusted_proxies_cidr = vec!["127.0.0.1/32".parse().expect("cidr")];
        },
        None,
    )
    .await;
    // No web in this test: its upstream is a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let door = FrontDoor::start(ingest_addr, closed).expect("nginx front door");
    let url = format!("{}/telemetry", door.url());
    let event = |n: usize| {
        let body = fixtures::read("01_lxc_installing.json");
        let id = install_of(&body).expect("id");
        replace(&body, &id, &format!("rate-limit-{n}"))
    };

    // Two clients on different loopback addresses, both claiming to be 1.2.3.4. nginx appends the real
    // peer; the edge takes the rightmost untrusted hop, so each client has its own bucket. Were the
    // forged address the key, the second client would find the first one's bucket empty.
    let a = client(Some("127.0.0.2".parse().expect("ip")));
    let b = client(Some("127.0.0.3".parse().expect("ip")));
    for n in 0..2 {
        let got = post(&a, &url, event(n), Some("1.2.3.4")).await;
        assert_eq!(got.status, 202, "client a, request {n}: {got:?}");
    }
    let got = post(&a, &url, event(2), Some("1.2.3.4")).await;
    assert_eq!(got.status, 429, "client a's third request: {got:?}");
    assert!(got.retry_after.is_some(), "{got:?}");
    let got = post(&b, &url, event(3), Some("1.2.3.4")).await;
    assert_eq!(
        got.status, 202,
        "client b shares no bucket with client a: {got:?}"
    );
    let got = post(&b, &url, event(4), None).await;
    assert_eq!(got.status, 202, "client b, second request: {got:?}");
    let got = post(&b, &url, event(5), Some("5.6.7.8")).await;
    assert_eq!(got.status, 429, "client b's third request: {got:?}");

    // The edge gone: the door answers as the edge does when it cannot take an event.
    ingest.stop().await.expect("ingest run");
    let got = post(&a, &url, event(6), None).await;
    assert_eq!(got.status, 503, "edge down: {got:?}");
    assert_eq!(got.json["error"], "unavailable", "{got:?}");
    assert_eq!(got.retry_after.as_deref(), Some("1"), "{got:?}");

    // No client address in nginx's log, even after upstream errors.
    let log = door.log();
    for address in ["127.0.0.2", "127.0.0.3", "1.2.3.4", "5.6.7.8"] {
        assert!(!log.contains(address), "nginx logged {address}: {log}");
    }
}
