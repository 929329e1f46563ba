//! Starts one edge in-process (the same `run` that `main` calls) against a real nats-server, and reads
//! back what landed on the stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use ingest::Config;
use testkit::{poll_until, NatsServer, Service};

pub struct Edge {
    pub addr: SocketAddr,
    /// The ops port: `/metrics` is served there only.
    pub ops_addr: SocketAddr,
    pub http: reqwest::Client,
    pub js: jetstream::Context,
    service: Service,
}

pub async fn start_edge(nats: &NatsServer, tweak: impl FnOnce(&mut Config)) -> Edge {
    let mut config = Config::for_nats(&nats.url());
    config.rate_limit_rpm = 0;
    let ops_port = testkit::free_port().expect("free port");
    config.ops_addr = SocketAddr::from(([127, 0, 0, 1], ops_port));
    tweak(&mut config);
    let ops_addr = config.ops_addr;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = fleet::nats::connect(&config.common.nats_url, "test-edge")
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    let metrics = testkit::recorder(ingest::metrics::install_recorder);
    let service = Service::spawn(|stop| ingest::run(config, listener, client, Some(metrics), stop));
    let edge = Edge {
        addr,
        ops_addr,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        js,
        service,
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
        let what = format!("readyz {}", if ready { 200 } else { 503 });
        poll_until(&what, Duration::from_secs(60), async || {
            let status = self
                .http
                .get(self.url("/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status == 200) == ready
        })
        .await
    }

    /// The Prometheus text of the ops port (`/metrics` is not on the public port).
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.ops_addr))
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

    /// The `execution_id`s of the stored events, in stream order.
    pub async fn stored_ids(&self) -> Vec<String> {
        self.stored_events()
            .await
            .into_iter()
            .map(|e| e.execution_id)
            .collect()
    }

    /// Stops the edge and returns how long `run` took to return.
    pub async fn shutdown(self) -> Duration {
        let started = Instant::now();
        self.service.stop().await.expect("run");
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
