//! `telemetry-fill` against a real nats-server: every synthetic event lands in the event stream once,
//! runs never share ids, and `cross` publishes failed finals of the app it names.

use async_nats::jetstream;
use schema::names::{event_subject, EVENTS_STREAM};
use schema::{Kind, Status};
use testkit::nats::NatsServer;
use traffic::fill::{self, Config, Mode, Shape};

async fn messages(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream(EVENTS_STREAM).await.expect("event stream");
    stream.info().await.expect("stream info").state.messages
}

#[tokio::test]
async fn every_synthetic_event_is_in_the_stream_once() {
    let nats = NatsServer::start().expect("nats-server");
    let config = |mode| Config {
        nats_url: nats.url(),
        mode,
    };
    let full = config(Mode::Installs {
        installs: 50,
        shape: Shape::Full,
    });
    let filled = fill::run(&full).await.expect("fill");
    assert_eq!(filled.events, 200);
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    assert_eq!(messages(&js).await, 200);

    // A second run gets ids of its own: nothing is taken for a duplicate.
    let short = config(Mode::Installs {
        installs: 30,
        shape: Shape::Short,
    });
    assert_eq!(fill::run(&short).await.expect("fill").events, 60);
    assert_eq!(messages(&js).await, 260);

    let cross = config(Mode::Cross {
        app: "benchapp".into(),
        installs: 10,
    });
    assert_eq!(fill::run(&cross).await.expect("cross").events, 10);
    assert_eq!(messages(&js).await, 270);
    let stream = js.get_stream(EVENTS_STREAM).await.expect("event stream");
    let last = stream
        .get_last_raw_message_by_subject(&event_subject(Kind::Lxc, Status::Failed))
        .await
        .expect("a failed final");
    let event: serde_json::Value = serde_json::from_slice(&last.payload).expect("json");
    assert_eq!(event["nsapp"], "benchapp", "{event}");
}
