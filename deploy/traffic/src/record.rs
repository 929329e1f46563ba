//! The line format of `telemetry-simulate --record FILE`, which `telemetry-verify` reads back: one line
//! per answered request of a valid event, tab-separated, without a header: the install's
//! `execution_id`, the status the edge stores, the answer (`accepted`, `duplicate`, an HTTP status code
//! or `transport`) and the event id of an `accepted` answer (`-` otherwise), e.g.
//! `0198…\tinstalling\taccepted\t0198…`. [`Answer`] is that line; both sides write and read it with serde
//! through [`Writer`] and [`parse`], so the format is defined here only.

use std::fmt;
use std::io;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// One line of the record: what the edge answered to one request of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The install the event belongs to.
    pub execution_id: String,
    /// The status the edge stores (after its reclassification), as its own validation sees the body.
    pub status: schema::Status,
    pub reply: Reply,
    /// The event id the edge answered; only an `accepted` answer carries one (`-` in the file).
    #[serde(with = "dash")]
    pub event_id: Option<String>,
}

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Reply {
    /// 202 with `"status":"accepted"`.
    Accepted,
    /// 202 with `"status":"duplicate"`.
    Duplicate,
    /// Any other HTTP status.
    Status(u16),
    /// No answer: a refused connection, a timeout, a broken response.
    Transport,
}

impl Reply {
    /// The event is in the stream: the edge answered 202.
    pub fn acked(self) -> bool {
        matches!(self, Reply::Accepted | Reply::Duplicate)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Accepted => f.write_str("accepted"),
            Reply::Duplicate => f.write_str("duplicate"),
            Reply::Status(status) => write!(f, "{status}"),
            Reply::Transport => f.write_str("transport"),
        }
    }
}

impl From<Reply> for String {
    fn from(reply: Reply) -> String {
        reply.to_string()
    }
}

impl TryFrom<String> for Reply {
    type Error = String;

    fn try_from(text: String) -> Result<Reply, String> {
        match text.as_str() {
            "accepted" => Ok(Reply::Accepted),
            "duplicate" => Ok(Reply::Duplicate),
            "transport" => Ok(Reply::Transport),
            other => other
                .parse()
                .map(Reply::Status)
                .map_err(|_| format!("unknown answer {other:?}")),
        }
    }
}

/// `-` for no event id.
mod dash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_deref().unwrap_or("-"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let id = String::deserialize(d)?;
        Ok((id != "-").then_some(id))
    }
}

/// The number of fields of a line.
const FIELDS: usize = 4;

/// Writes record lines to `W` (buffered: call [`Writer::flush`] at the end).
pub struct Writer<W: io::Write>(csv::Writer<W>);

impl<W: io::Write> Writer<W> {
    pub fn new(out: W) -> Writer<W> {
        Writer(
            csv::WriterBuilder::new()
                .delimiter(b'\t')
                .has_headers(false)
                .from_writer(out),
        )
    }

    pub fn write(&mut self, answer: &Answer) -> io::Result<()> {
        self.0.serialize(answer).map_err(io::Error::from)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Every line of a record, in order; an error names the first line that is not one.
pub fn parse(input: impl io::Read) -> anyhow::Result<Vec<Answer>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut answers = Vec::new();
    for (n, line) in reader.records().enumerate() {
        let line = line.with_context(|| format!("record line {}", n + 1))?;
        if line.len() != FIELDS {
            bail!(
                "record line {}: expected {FIELDS} fields: {:?}",
                n + 1,
                line.iter().collect::<Vec<_>>().join("\t")
            );
        }
        answers.push(
            line.deserialize(None)
                .with_context(|| format!("record line {}", n + 1))?,
        );
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Status;

    fn answer(id: &str, status: Status, reply: Reply, event_id: Option<&str>) -> Answer {
        Answer {
            execution_id: id.to_owned(),
            status,
            reply,
            event_id: event_id.map(str::to_owned),
        }
    }

    /// The answer is written as `line` and read back as itself.
    fn check(answer: Answer, line: &str) {
        let mut out = Writer::new(Vec::new());
        out.write(&answer).expect("write");
        out.flush().expect("flush");
        let written = String::from_utf8(out.0.into_inner().expect("buffer")).expect("utf-8");
        assert_eq!(written, format!("{line}\n"), "{answer:?}");
        let read = parse(written.as_bytes()).expect("parse");
        assert_eq!(read, [answer], "{line}");
    }

    #[test]
    fn every_answer_round_trips_through_its_line() {
        let id = "0198d6a1-7c2e-7b31-9a55-3f1c2d4e5f60";
        check(
            answer(id, Status::Installing, Reply::Accepted, Some("e1")),
            &format!("{id}\tinstalling\taccepted\te1"),
        );
        check(
            answer("a", Status::Configuring, Reply::Duplicate, None),
            "a\tconfiguring\tduplicate\t-",
        );
        check(
            answer("a", Status::Aborted, Reply::Status(503), None),
            "a\taborted\t503\t-",
        );
        check(
            answer("b.1:x", Status::Unknown, Reply::Status(429), None),
            "b.1:x\tunknown\t429\t-",
        );
        check(
            answer("c", Status::Success, Reply::Transport, None),
            "c\tsuccess\ttransport\t-",
        );
    }

    #[test]
    fn a_line_that_is_not_a_record_is_an_error_naming_it() {
        for (text, line) in [
            ("a\tinstalling\n", 1),
            ("a\tinstalling\taccepted\te\nb\tinstalling\taccepted\n", 2),
            ("a\tinstalling\taccepted\te\textra\n", 1),
            ("a\tbogus\taccepted\te\n", 1),
            ("a\tinstalling\tmaybe\t-\n", 1),
        ] {
            let error = format!("{:#}", parse(text.as_bytes()).expect_err(text));
            assert!(
                error.contains(&format!("record line {line}")),
                "{text:?}: {error}"
            );
        }
        assert!(parse(&b""[..]).expect("empty").is_empty());
    }
}
