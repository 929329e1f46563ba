//! Starts one edge in-process (the same `run` that `main` calls) against a real nats-server, and reads
//! back what landed on the stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use ingest::Config;
use metrics_exporter_prometheus::PrometheusHandle;
use testkit::NatsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Edge {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub js: jetstream::Context,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// One recorder per test process (nextest runs each test in its own process).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| ingest::metrics::install_recorder().expect("recorder"))
        .clone()
}

pub async fn start_edge(nats: &NatsServer, tweak: impl FnOnce(&mut Config)) -> Edge {
    let mut config = Config::for_nats(&nats.url());
    config.rate_limit_rpm = 0;
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = fleet::nats::connect(&config.common.nats_url, "test-edge")
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(ingest::run(
        config,
        listener,
        client,
        Some(recorder()),
        async {
            let _ = stopped.await;
        },
    ));
    let edge = Edge {
        addr,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        js,
        stop: Some(stop),
        task: Some(task),
    };
    edge.wait_ready(true).await;
    edge
}

impl Edge {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post(&self, body: impl Into<reqwest::Body>) -> Answer {
        self.post_with(body, &[]).await
    }

    pub async fn post_with(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .http
            .post(self.url("/telemetry"))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let started = Instant::now();
        let resp = req.send().await.expect("request");
        Answer::read(resp, started).await
    }

    pub async fn wait_ready(&self, ready: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self
                .http
                .get(self.url("/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if (status == 200) == ready {
                return;
            }
            assert!(Instant::now() < deadline, "readyz never became {ready}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Every message on the event stream, in order.
    pub async fn stored(&self) -> Vec<async_nats::jetstream::message::StreamMessage> {
        let mut stream = self
            .js
            .get_stream(schema::names::EVENTS_STREAM)
            .await
            .expect("stream");
        let info = stream.info().await.expect("info").state.clone();
        let mut out = Vec::new();
        for seq in info.first_sequence..=info.last_sequence {
            if info.messages == 0 {
                break;
            }
            if let Ok(msg) = stream.get_raw_message(seq).await {
                out.push(msg);
            }
        }
        out
    }

    pub async fn stored_events(&self) -> Vec<schema::Event> {
        self.stored()
            .await
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).expect("stored event parses"))
            .collect()
    }

    /// Stops the edge and returns how long `run` took to return.
    pub async fn shutdown(mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("run");
        }
        started.elapsed()
    }
}

pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub json: serde_json::Value,
    pub took: Duration,
}

impl Answer {
    async fn read(resp: reqwest::Response, started: Instant) -> Answer {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
        Answer {
            status,
            retry_after,
            json,
            took: started.elapsed(),
        }
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schema/fixtures/payloads")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture with its ids replaced, so that each file is an install of its own.
pub fn fixture_as(name: &str, id: &str) -> Vec<u8> {
    let body = fixture(name);
    let mut out = body.clone();
    for known in [
        "3f2b8c1e-9d4a-4b7e-8c21-6a5f0e9d7b12",
        "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        "b7e1f0a2-44c3-4d5e-9f60-1a2b3c4d5e6f",
        "0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f",
        "5e4d3c2b-1a09-4f8e-a7d6-c5b4a3928170",
    ] {
        out = replace_bytes(&out, known.as_bytes(), id.as_bytes());
    }
    out
}

fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// The value of a Prometheus sample line, e.g. `name{label="x"}`; 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
