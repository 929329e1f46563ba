//! Dead letters: an event a sink cannot store (undecodable, unknown schema version, refused by the store)
//! is published to `TELEMETRY_DLQ` on `telemetry.v1.dlq.<sink>` with its original bytes and headers that
//! say why, then terminated on the event stream. The `Nats-Msg-Id` is `<sink>:<stream sequence>`, so a
//! letter published twice (a crash between publish and term) is stored once.

use async_nats::jetstream::{self, Message};
use async_nats::HeaderMap;
use bytes::Bytes;

/// Header: why the sink refused the event (one line, at most [`MAX_REASON_BYTES`]).
pub const REASON_HEADER: &str = "Telemetry-Dlq-Reason";
/// Header: the sink that refused it (clickhouse, pocketbase).
pub const SINK_HEADER: &str = "Telemetry-Dlq-Sink";
/// Header: the subject the event was published on.
pub const SUBJECT_HEADER: &str = "Telemetry-Dlq-Subject";
/// Header: its sequence on the event stream.
pub const SEQUENCE_HEADER: &str = "Telemetry-Dlq-Sequence";
/// Longest reason kept.
pub const MAX_REASON_BYTES: usize = 1024;

/// One dead letter, ready to publish.
#[derive(Debug, Clone)]
pub struct Letter {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl Letter {
    pub fn new(sink: &str, msg: &Message, reason: &str) -> Letter {
        let sequence = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let mut headers = HeaderMap::new();
        headers.insert(REASON_HEADER, one_line(reason).as_str());
        headers.insert(SINK_HEADER, sink);
        headers.insert(SUBJECT_HEADER, msg.subject.as_str());
        headers.insert(SEQUENCE_HEADER, sequence.to_string().as_str());
        headers.insert(
            schema::names::MSG_ID_HEADER,
            format!("{sink}:{sequence}").as_str(),
        );
        Letter {
            subject: format!("{}.{sink}", schema::names::DLQ_SUBJECT_PREFIX),
            headers,
            payload: msg.payload.clone(),
        }
    }
}

/// A header value: control characters become spaces, cut at a character boundary.
fn one_line(reason: &str) -> String {
    let flat: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    schema::privacy::cut_at_char(flat.trim(), MAX_REASON_BYTES).to_string()
}

/// Publishes a letter and waits for the stream's ack.
pub async fn publish(js: &jetstream::Context, letter: &Letter) -> Result<(), async_nats::Error> {
    js.publish_with_headers(
        letter.subject.clone(),
        letter.headers.clone(),
        letter.payload.clone(),
    )
    .await?
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_in_a_header() {
        assert_eq!(one_line(" bad\r\nvalue\t"), "bad  value");
        let long = "é".repeat(2000);
        let cut = one_line(&long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
