//! Reading JSON lines: one record or event per line (a PocketBase record export, a ClickHouse
//! JSONEachRow dump, or bodies as scripts sent them, with their reception time). A line goes through the
//! edge's rescue pass, so the script bugs of contract §4 are repaired and marked as for live traffic. Its
//! time is `created` (or `received_at`); its identity is `id` (or `event_id`), else a hash of the line.
//! The cursor is the byte offset after the last stored line; stdin cannot be resumed.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncSeekExt, BufReader};

use super::map::{created_of, identity_of, Record};
use super::state::Cursor;
use super::{Failure, RawBatch};

/// A reader of one file (or stdin), from a cursor on.
pub struct FileReader {
    input: Box<dyn AsyncBufRead + Send + Unpin>,
    offset: u64,
    line: u64,
    size: Option<u64>,
    exhausted: bool,
}

/// A line as a record, or the kind of its rejection.
pub fn parse_line(line: &[u8]) -> Result<Record, String> {
    let parsed = schema::rescue::parse(line).map_err(|_| "invalid_json".to_string())?;
    let identity = identity_of(parsed.object.get("id"))
        .or_else(|| identity_of(parsed.object.get("event_id")))
        .unwrap_or_else(|| {
            let digest = Sha256::digest(line);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("line:{hex}")
        });
    let created = created_of(&parsed.object, &["created", "received_at"])?;
    Ok(Record {
        identity,
        created,
        fields: parsed.object,
        rescued: parsed.rescued,
    })
}

impl FileReader {
    /// Opens `path` (`-` for stdin) at the cursor.
    pub async fn open(path: &Path, cursor: &Cursor) -> Result<FileReader, Failure> {
        let (offset, line) = match cursor {
            Cursor::Start => (0, 0),
            Cursor::File { offset, line } => (*offset, *line),
            other => {
                return Err(Failure::Permanent(format!(
                    "the checkpoint holds a cursor of another source: {other:?}"
                )))
            }
        };
        if path.as_os_str() == "-" {
            return Ok(FileReader {
                input: Box::new(BufReader::new(tokio::io::stdin())),
                offset: 0,
                line: 0,
                size: None,
                exhausted: false,
            });
        }
        let open = |e: std::io::Error| Failure::Permanent(format!("{}: {e}", path.display()));
        let mut file = tokio::fs::File::open(path).await.map_err(open)?;
        let size = file.metadata().await.map_err(open)?.len();
        if offset > size {
            return Err(Failure::Permanent(format!(
                "{} is shorter ({size} bytes) than the checkpoint's offset {offset}: not the same file",
                path.display()
            )));
        }
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(open)?;
        Ok(FileReader {
            input: Box::new(BufReader::with_capacity(1 << 20, file)),
            offset,
            line,
            size: Some(size),
            exhausted: false,
        })
    }

    /// Bytes after the cursor, for a file.
    pub fn remaining(&self) -> Option<u64> {
        self.size.map(|s| s.saturating_sub(self.offset))
    }

    /// The next lines, up to `max` records (blank lines skipped), or `None` at the end.
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<RawBatch>, Failure> {
        let mut items = Vec::new();
        let mut advanced = 0;
        let mut buf = Vec::new();
        while items.len() < max && !self.exhausted {
            buf.clear();
            let n =
                self.input.read_until(b'\n', &mut buf).await.map_err(|e| {
                    Failure::Permanent(format!("reading line {}: {e}", self.line + 1))
                })?;
            if n == 0 {
                self.exhausted = true;
                break;
            }
            self.offset += n as u64;
            advanced += n as u64;
            self.line += 1;
            let text = buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            items.push(parse_line(text));
        }
        if items.is_empty() {
            return Ok(None);
        }
        Ok(Some(RawBatch {
            items,
            cursor: Cursor::File {
                offset: self.offset,
                line: self.line,
            },
            advanced,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record's identity (`None`: a hash of the line) and app, or the rejection kind.
    fn check(line: &str, expected: Result<(Option<&str>, &str), &str>) {
        let got = parse_line(line.as_bytes()).map(|r| {
            let id = (!r.identity.starts_with("line:")).then(|| r.identity.clone());
            (id, r.fields["nsapp"].as_str().unwrap_or("").to_string())
        });
        let expected = expected
            .map(|(id, app)| (id.map(str::to_string), app.to_string()))
            .map_err(str::to_string);
        assert_eq!(got, expected, "{line}");
    }

    #[test]
    fn lines_become_records() {
        check(
            r#"{"id":"abc","created":"2025-01-01 00:00:00.000Z","nsapp":"jellyfin"}"#,
            Ok((Some("abc"), "jellyfin")),
        );
        check(
            r#"{"event_id":"0194","received_at":"2025-01-01T00:00:00Z","nsapp":"x"}"#,
            Ok((Some("0194"), "x")),
        );
        check(r#"{"created":1735689600,"nsapp":"y"}"#, Ok((None, "y")));
        // A body with a script bug of §4 is repaired as at the edge.
        check(
            r#"{"created":"2025-01-01 00:00:00Z","nsapp":"z","disk_size": 8G}"#,
            Ok((None, "z")),
        );
        check(r#"{"nsapp":"x"}"#, Err("missing_field:created"));
        check(
            r#"{"created":"later","nsapp":"x"}"#,
            Err("invalid_field:created"),
        );
        check("not json at all", Err("invalid_json"));
        check("[1, 2]", Err("invalid_json"));
    }

    #[test]
    fn identical_lines_get_the_same_identity() {
        let line = br#"{"created":"2025-01-01 00:00:00Z","nsapp":"z"}"#;
        let a = parse_line(line).expect("a");
        let b = parse_line(line).expect("b");
        assert_eq!(a.identity, b.identity);
        assert_ne!(
            a.identity,
            parse_line(br#"{"created":"2025-01-01 00:00:01Z","nsapp":"z"}"#)
                .expect("c")
                .identity
        );
    }
}
