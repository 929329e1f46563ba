//! Runs the aggregator in-process (the same `run` that `main` calls) against a real nats-server, publishes
//! events straight to the stream as the edge would, and reads the KV bucket back.

use std::time::{Duration, Instant};

use aggregator::Config;
use async_nats::jetstream::{self, kv};
use schema::validate::{validate, Reception};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Aggregator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn start_aggregator(nats_url: &str, tweak: impl FnOnce(&mut Config)) -> Aggregator {
    let mut config = Config::for_nats(nats_url);
    config.windows = vec!["1h".parse().expect("span"), "24h".parse().expect("span")];
    config.publish_interval_ms = 200;
    tweak(&mut config);
    let client = fleet::nats::connect(nats_url, "test-aggregator")
        .await
        .expect("connect");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(aggregator::run(config, client, None, async {
        let _ = stopped.await;
    }));
    Aggregator {
        stop: Some(stop),
        task: Some(task),
    }
}

impl Aggregator {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("run");
        }
    }
}

pub async fn jetstream(nats_url: &str) -> jetstream::Context {
    let client = fleet::nats::connect(nats_url, "test-client")
        .await
        .expect("connect");
    fleet::nats::wait_connected(&client).await;
    let js = jetstream::new(client);
    let settings = schema::names::events_stream(
        schema::names::DEFAULT_EVENTS_MAX_AGE,
        schema::names::DEFAULT_EVENTS_MAX_BYTES,
        1,
    );
    fleet::nats::ensure_stream(&js, &settings)
        .await
        .expect("event stream");
    js
}

/// One event body of an install.
pub fn body(exec: &str, app: &str, status: &str, extra: &str) -> String {
    format!(
        r#"{{"random_id":"r-{exec}","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"{status}"{extra}}}"#
    )
}

/// Validates a body like the edge does and returns the wire bytes, subject and de-duplication id.
pub fn accept(body: &str) -> (String, String, Vec<u8>) {
    let accepted = validate(body.as_bytes(), Reception::now()).expect("valid event");
    (
        accepted.event.subject(),
        accepted.msg_id,
        accepted.event.to_json(),
    )
}

/// Publishes accepted events and waits for every ack.
pub async fn publish_all(js: &jetstream::Context, events: &[(String, String, Vec<u8>)]) {
    for (subject, msg_id, payload) in events {
        js.send_publish(
            subject.clone(),
            jetstream::message::PublishMessage::build()
                .payload(payload.clone().into())
                .message_id(msg_id),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    }
}

pub async fn stats(js: &jetstream::Context) -> kv::Store {
    fleet::nats::ensure_bucket(js, aggregator::stats_bucket_config(1)).await
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn get_json<T: serde::de::DeserializeOwned>(store: &kv::Store, key: &str) -> Option<T> {
    let bytes = store.get(key).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}
