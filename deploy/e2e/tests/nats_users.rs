//! The NATS users of `deploy/nats/users.conf` on a real nats-server: each service's user can do its job
//! (the same JetStream calls the service makes, through `fleet::nats::connect_with` as the service
//! connects), and the permissions stop what the job does not need: the edge's user reads no bucket and
//! subscribes to no event, the web's user publishes no event, the writer's user writes no rollup.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use fleet::nats::Auth;
use fleet::Secret;
use schema::names;
use testkit::{poll_until, NatsServer};
use tokio_stream_shim::next;

const USERS: [&str; 5] = ["ingest", "writer", "aggregator", "alerter", "web"];

fn password(user: &str) -> String {
    format!("pw-{user}-Zq7vX2kP9m")
}

fn server() -> NatsServer {
    let users = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nats/users.conf");
    let vars: Vec<(String, String)> = USERS
        .iter()
        .map(|u| (format!("NATS_{}_PASSWORD", u.to_uppercase()), password(u)))
        .collect();
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    NatsServer::start_with(&users, &env).expect("nats-server with deploy/nats/users.conf")
}

fn auth(user: &str) -> Auth {
    Auth {
        user: Some((user.to_string(), Secret::new(password(user)))),
        ..Auth::default()
    }
}

async fn connect(nats: &NatsServer, user: &str) -> async_nats::Client {
    let client = fleet::nats::connect_with(&nats.url(), &auth(user), user)
        .await
        .expect("connect");
    poll_until(
        &format!("{user} connected"),
        Duration::from_secs(20),
        async || fleet::nats::connected(&client),
    )
    .await;
    client
}

/// A JetStream context that gives up quickly: a refused request gets no answer.
fn js(client: &async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(2));
    js
}

mod tokio_stream_shim {
    //! The next item of a stream, with a deadline.
    use std::time::Duration;

    use futures::StreamExt;

    pub async fn next<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .ok()
            .flatten()
    }
}

fn subject(prefix: &str, rest: &str) -> String {
    format!("{prefix}.{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_user_does_its_job_and_no_more() {
    let nats = server();

    // No login, or a wrong password: refused.
    let anonymous = async_nats::ConnectOptions::new().connect(nats.url()).await;
    assert!(
        anonymous.is_err(),
        "a client without a login must be refused"
    );
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("web".into(), "wrong".into())
        .connect(nats.url())
        .await;
    assert!(wrong.is_err(), "a wrong password must be refused");

    // ingest: keeps the event stream and publishes events, acknowledged.
    let ingest = connect(&nats, "ingest").await;
    let ingest_js = js(&ingest);
    let events = names::events_stream(names::DEFAULT_EVENTS_MAX_AGE, 1 << 30, 1);
    fleet::nats::ensure_stream(&ingest_js, &events)
        .await
        .expect("ingest keeps the event stream");
    ingest_js
        .publish(
            subject(names::EVENTS_SUBJECT_PREFIX, "lxc.installing"),
            "{\"n\":1}".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ingest's event acknowledged");

    // writer: the dead-letter stream, a durable pull consumer that fetches and acks, its lease bucket.
    let writer = connect(&nats, "writer").await;
    let writer_js = js(&writer);
    let stream = writer_js
        .get_or_create_stream(fleet::nats::stream_config(&events))
        .await
        .expect("writer opens the event stream");
    writer_js
        .get_or_create_stream(fleet::nats::stream_config(&names::dlq_stream(1)))
        .await
        .expect("writer opens the dead-letter stream");
    let sink: consumer::PullConsumer = stream
        .get_or_create_consumer(
            "writer-clickhouse",
            consumer::pull::Config {
                durable_name: Some("writer-clickhouse".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .expect("writer's durable consumer");
    let mut batch = sink
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let message = next(&mut batch).await.expect("one event").expect("message");
    message.double_ack().await.expect("writer acks");
    writer_js
        .publish(subject(names::DLQ_SUBJECT_PREFIX, "writer"), "{}".into())
        .await
        .expect("publish")
        .await
        .expect("dead letter acknowledged");
    let lease = writer_js
        .create_key_value(fleet::nats::bucket_config(&names::writer_lease_bucket(
            Duration::from_secs(15),
            1,
        )))
        .await
        .expect("writer's lease bucket");
    lease
        .put("clickhouse", "me".into())
        .await
        .expect("lease put");
    assert!(lease.get("clickhouse").await.expect("lease get").is_some());

    // aggregator: reads events with an ordered consumer, writes rollups, publishes a synthetic final,
    // answers admin requests.
    let aggregator = connect(&nats, "aggregator").await;
    let aggregator_js = js(&aggregator);
    let stats = fleet::nats::ensure_bucket(&aggregator_js, &names::stats_bucket(1)).await;
    stats
        .put("1h.global", "{}".into())
        .await
        .expect("rollup put");
    let ordered = aggregator_js
        .get_stream(names::EVENTS_STREAM)
        .await
        .expect("aggregator reads the event stream")
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut messages = ordered.messages().await.expect("messages");
    next(&mut messages)
        .await
        .expect("one event")
        .expect("message");
    aggregator_js
        .publish(
            subject(names::EVENTS_SUBJECT_PREFIX, "lxc.unknown"),
            "{\"n\":2}".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("synthetic final acknowledged");
    let mut admin = aggregator
        .subscribe(schema::names::ADMIN_SUBJECTS)
        .await
        .expect("admin subscription");
    let responder = aggregator.clone();
    tokio::spawn(async move {
        while let Some(request) = futures::StreamExt::next(&mut admin).await {
            if let Some(reply) = request.reply {
                let _ = responder.publish(reply, "done".into()).await;
            }
        }
    });
    aggregator.flush().await.expect("flush");

    // alerter: watches the rollups, writes its alert records and the alert stream.
    let alerter = connect(&nats, "alerter").await;
    let alerter_js = js(&alerter);
    let stats_seen = fleet::nats::ensure_bucket(&alerter_js, &names::stats_bucket(1)).await;
    let mut watch = stats_seen.watch_with_history(">").await.expect("watch");
    let entry = next(&mut watch).await.expect("one rollup").expect("entry");
    assert_eq!(entry.key, "1h.global");
    let alerts = fleet::nats::ensure_bucket(&alerter_js, &names::alerts_bucket(1)).await;
    alerts
        .create("rate.app", "{}".into())
        .await
        .expect("alert create");
    fleet::nats::ensure_stream(&alerter_js, &names::alerts_stream(1))
        .await
        .expect("alert stream");
    alerter_js
        .publish(
            subject(names::ALERTS_SUBJECT_PREFIX, "fired"),
            "{\"alert\":1}".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("alert acknowledged");
    assert!(
        stats_seen.put("1h.global", "x".into()).await.is_err(),
        "the alerter must not write rollups"
    );

    // web: reads the rollups, the alert records and the alert stream; sends admin requests.
    let web = connect(&nats, "web").await;
    let web_js = js(&web);
    let rollups = web_js
        .get_key_value(names::STATS_BUCKET)
        .await
        .expect("web opens the rollups");
    assert!(rollups.get("1h.global").await.expect("get").is_some());
    let records = web_js
        .get_key_value(names::ALERTS_BUCKET)
        .await
        .expect("web opens the alert records");
    assert!(records.get("rate.app").await.expect("get").is_some());
    let alert_stream = web_js
        .get_stream(names::ALERTS_STREAM)
        .await
        .expect("web opens the alert stream");
    alert_stream
        .get_raw_message(1)
        .await
        .expect("web reads an alert");
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        web.request(schema::names::ADMIN_CLEANUP_RUN_SUBJECT, "{}".into()),
    )
    .await
    .expect("admin answer in time")
    .expect("admin request");
    assert_eq!(&answer.payload[..], b"done");

    // What the jobs do not need is refused.
    assert!(
        web_js
            .publish(
                subject(names::EVENTS_SUBJECT_PREFIX, "lxc.installing"),
                "{\"forged\":true}".into()
            )
            .await
            .expect("publish sent")
            .await
            .is_err(),
        "the web must not publish events"
    );
    assert!(
        rollups.put("1h.global", "x".into()).await.is_err(),
        "the web must not write rollups"
    );
    assert!(
        js(&ingest)
            .get_key_value(names::STATS_BUCKET)
            .await
            .is_err(),
        "the edge must not read the rollups"
    );
    assert!(
        js(&ingest)
            .get_stream(names::EVENTS_STREAM)
            .await
            .expect("stream info")
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .is_err(),
        "the edge must not read events"
    );
    assert!(
        writer_js.get_key_value(names::STATS_BUCKET).await.is_err(),
        "the writer must not touch the rollups"
    );
    assert!(
        writer_js
            .publish(subject(names::ALERTS_SUBJECT_PREFIX, "fired"), "{}".into())
            .await
            .expect("publish sent")
            .await
            .is_err(),
        "the writer must not publish alerts"
    );

    // A subscription outside a user's inbox is refused by the server.
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let snoop = async_nats::ConnectOptions::new()
        .user_and_password("ingest".into(), password("ingest"))
        .custom_inbox_prefix(fleet::nats::inbox_prefix("ingest"))
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = errors_tx.send(e.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .expect("ingest connects");
    let _events = snoop
        .subscribe(subject(names::EVENTS_SUBJECT_PREFIX, "lxc.installing"))
        .await
        .expect("sent");
    let _replies = snoop.subscribe("_INBOX_web.>").await.expect("sent");
    snoop.flush().await.expect("flush");
    let mut refused = Vec::new();
    while refused.len() < 2 {
        let error = tokio::time::timeout(Duration::from_secs(10), errors.recv())
            .await
            .expect("the server refuses the subscriptions in time")
            .expect("error");
        refused.push(error.to_lowercase());
    }
    assert!(
        refused.iter().all(|e| e.contains("permissions violation")),
        "{refused:?}"
    );

    // Only the two events of ingest and the aggregator are on the stream: nothing forged got in.
    let info = js(&ingest)
        .get_stream(names::EVENTS_STREAM)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .clone();
    assert_eq!(info.messages, 2);
}
