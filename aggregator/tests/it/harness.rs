//! Runs the aggregator in-process (the same `run` that `main` calls) against a real nats-server, publishes
//! events straight to the stream as the edge would, and reads the KV bucket back.

use aggregator::Config;
use async_nats::jetstream::{self, kv};
use schema::validate::{validate, Reception};
use testkit::Service;

pub struct Aggregator {
    service: Service,
}

pub async fn start_aggregator(nats_url: &str, tweak: impl FnOnce(&mut Config)) -> Aggregator {
    let mut config = Config::for_nats(nats_url);
    config.windows = vec!["1h".parse().expect("span"), "24h".parse().expect("span")];
    config.publish_interval_ms = 200;
    tweak(&mut config);
    let client = fleet::nats::connect(nats_url, "test-aggregator")
        .await
        .expect("connect");
    Aggregator {
        service: Service::spawn(|stop| aggregator::run(config, client, None, stop)),
    }
}

impl Aggregator {
    pub async fn stop(self) {
        self.service.stop().await.expect("run");
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
    fleet::nats::ensure_bucket(js, &schema::names::stats_bucket(1)).await
}

pub async fn get_json<T: serde::de::DeserializeOwned>(store: &kv::Store, key: &str) -> Option<T> {
    let bytes = store.get(key).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}
