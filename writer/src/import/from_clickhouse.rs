//! Reading a ClickHouse table of received events (`telemetry_db.telemetry`: one row per event, retried
//! duplicates included), ordered by the stable key (`created` in milliseconds, `toString(id)`). The
//! table is read in key ranges of at most `--chunk-rows` rows: a cheap query of the two key columns finds
//! where a range ends, then the range's rows are streamed as JSONEachRow and read line by line while the
//! previous batch is written. Memory stays bounded on both sides, and a restart continues after the last
//! stored key. `created` may be `DateTime64(n)` or, on servers without it, `DateTime`. The table name is
//! bound as two identifiers, every value with `?`.

use std::time::Duration;

use clickhouse::sql::Identifier;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::io::AsyncBufReadExt;

use super::config::{ClickHouseArgs, TableName};
use super::map::Record;
use super::state::Cursor;
use super::{Failure, Patience, RawBatch};

/// The type of the `created` column, which decides the SQL that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeColumn {
    DateTime,
    DateTime64,
}

impl TimeColumn {
    /// From the column type as `system.columns` names it.
    pub fn from_type(name: &str) -> Option<TimeColumn> {
        if name.starts_with("DateTime64(") {
            Some(TimeColumn::DateTime64)
        } else if name == "DateTime" || name.starts_with("DateTime(") {
            Some(TimeColumn::DateTime)
        } else {
            None
        }
    }

    /// `created` in milliseconds since the epoch, as UInt64.
    pub fn millis(self) -> &'static str {
        match self {
            TimeColumn::DateTime => "toUInt64(created) * 1000",
            TimeColumn::DateTime64 => "toUInt64(toUnixTimestamp64Milli(created))",
        }
    }

    /// A time of this column's type from Unix seconds bound to `?` (lets the primary key prune).
    fn seconds_sql(self) -> &'static str {
        match self {
            TimeColumn::DateTime => "toDateTime(?)",
            TimeColumn::DateTime64 => "toDateTime64(?, 3)",
        }
    }

    /// Rows after a key. Binds: ms, ms, id, seconds.
    pub fn after_clause(self) -> String {
        format!(
            "({ms} > ? OR ({ms} = ? AND toString(id) > ?)) AND created >= {at}",
            ms = self.millis(),
            at = self.seconds_sql()
        )
    }

    /// Rows up to a key, inclusive. Binds: ms, ms, id, seconds (strictly before).
    pub fn upto_clause(self) -> String {
        format!(
            "({ms} < ? OR ({ms} = ? AND toString(id) <= ?)) AND created < {at}",
            ms = self.millis(),
            at = self.seconds_sql()
        )
    }
}

/// A key of the source's order.
type Key = (u64, String);

/// The rows of one key range, being streamed.
struct Range {
    lines: clickhouse::query::BytesCursor,
    /// No key bound: this range runs to the end of the table.
    last: bool,
}

/// A reader of one table, from a cursor on.
pub struct ClickHouseReader {
    client: clickhouse::Client,
    table: TableName,
    time: TimeColumn,
    chunk_rows: u64,
    after: Option<Key>,
    range: Option<Range>,
    exhausted: bool,
    retry_for: Duration,
}

fn transient(e: clickhouse::error::Error) -> Failure {
    match e {
        clickhouse::error::Error::BadResponse(text) => {
            Failure::Permanent(format!("source clickhouse: {}", super::cut(&text, 400)))
        }
        other => Failure::Transient(format!("source clickhouse: {other}")),
    }
}

/// One line of JSONEachRow: its key, and the record (or why it cannot be one). A line that is not a
/// row is an error of the stream (ClickHouse writes an exception into the body when a query fails
/// after it started answering).
fn parse_row(line: &[u8]) -> Result<(Key, Result<Record, String>), String> {
    let text = String::from_utf8_lossy(line);
    let not_a_row = || format!("not a row: {}", super::cut(text.trim(), 300));
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text.trim_end()) else {
        return Err(not_a_row());
    };
    let ms = match fields.get("_import_ms") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(not_a_row)?;
    let id = fields
        .get("_import_id")
        .and_then(Value::as_str)
        .ok_or_else(not_a_row)?
        .to_string();
    let record = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| super::map::INVALID_CREATED.to_string())
        .map(|created| Record {
            identity: id.clone(),
            created,
            fields,
            rescued: Vec::new(),
        });
    Ok(((ms, id), record))
}

impl ClickHouseReader {
    /// Checks the table and the type of its `created`.
    pub async fn open(
        args: &ClickHouseArgs,
        cursor: &Cursor,
        retry_for: Duration,
    ) -> Result<ClickHouseReader, Failure> {
        let after = match cursor {
            Cursor::Start => None,
            Cursor::Clickhouse { ms, id } => Some((*ms, id.clone())),
            other => {
                return Err(Failure::Permanent(format!(
                    "the checkpoint holds a cursor of another source: {other:?}"
                )))
            }
        };
        let mut client = clickhouse::Client::default()
            .with_url(&args.url)
            .with_user(&args.user);
        if !args.password.is_empty() {
            client = client.with_password(args.password.expose());
        }
        let mut patience = Patience::new(retry_for);
        let columns: Vec<(String, String)> = loop {
            let query = client
                .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
                .bind(&args.table.database)
                .bind(&args.table.table);
            match query.fetch_all().await.map_err(transient) {
                Ok(columns) => break columns,
                Err(Failure::Transient(e)) if patience.wait("source clickhouse", &e).await => {}
                Err(e) => return Err(e),
            }
        };
        if columns.is_empty() {
            return Err(Failure::Permanent(format!(
                "source clickhouse: no table {}",
                args.table
            )));
        }
        let type_of = |name: &str| {
            columns
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.as_str())
        };
        if type_of("id").is_none() {
            return Err(Failure::Permanent(format!(
                "source clickhouse: {} has no column id",
                args.table
            )));
        }
        let created = type_of("created").unwrap_or("none");
        let time = TimeColumn::from_type(created).ok_or_else(|| {
            Failure::Permanent(format!(
                "source clickhouse: {}.created is {created}, not DateTime or DateTime64",
                args.table
            ))
        })?;
        Ok(ClickHouseReader {
            client,
            table: args.table.clone(),
            time,
            chunk_rows: args.chunk_rows.max(1),
            after,
            range: None,
            exhausted: false,
            retry_for,
        })
    }

    /// `sql` (with `{after}` standing for the cursor's condition, or `1`) bound to the table and the
    /// cursor.
    fn query(&self, sql: &str) -> clickhouse::query::Query {
        let condition = match self.after {
            Some(_) => self.time.after_clause(),
            None => "1".to_string(),
        };
        let mut query = self
            .client
            .query(
                &sql.replace("{after}", &condition)
                    .replace("{ms}", self.time.millis()),
            )
            .bind(Identifier(&self.table.database))
            .bind(Identifier(&self.table.table));
        if let Some((ms, id)) = &self.after {
            query = query.bind(*ms).bind(*ms).bind(id.as_str()).bind(ms / 1000);
        }
        query
    }

    /// Rows after the cursor; `None` when the count fails.
    pub async fn remaining(&mut self) -> Option<u64> {
        match self
            .query("SELECT count() FROM ?.? WHERE {after}")
            .fetch_one::<u64>()
            .await
        {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::info!(error = %e, "cannot count the rows, progress without a total");
                None
            }
        }
    }

    /// Starts streaming the next key range after the cursor.
    async fn open_range(&mut self) -> Result<Range, Failure> {
        let bound: Option<Key> = self
            .query(
                "SELECT {ms} AS ms, toString(id) AS rid FROM ?.? WHERE {after} \
                 ORDER BY ms, rid LIMIT ?, 1",
            )
            .bind(self.chunk_rows - 1)
            .fetch_optional()
            .await
            .map_err(transient)?;
        let mut sql = String::from(
            "SELECT *, {ms} AS _import_ms, toString(id) AS _import_id FROM ?.? WHERE {after}",
        );
        if bound.is_some() {
            sql.push_str(" AND ");
            sql.push_str(&self.time.upto_clause());
        }
        sql.push_str(" ORDER BY _import_ms, _import_id");
        let mut query = self.query(&sql);
        if let Some((ms, id)) = &bound {
            query = query
                .bind(*ms)
                .bind(*ms)
                .bind(id.as_str())
                .bind(ms / 1000 + 1);
        }
        let lines = query.fetch_bytes("JSONEachRow").map_err(transient)?;
        Ok(Range {
            lines,
            last: bound.is_none(),
        })
    }

    /// The next rows, up to `max`, or `None` at the end of the table.
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<RawBatch>, Failure> {
        let mut items = Vec::new();
        let mut patience = Patience::new(self.retry_for);
        let mut line = Vec::new();
        while items.len() < max && !self.exhausted {
            if self.range.is_none() {
                match self.open_range().await {
                    Ok(range) => self.range = Some(range),
                    Err(Failure::Transient(e)) if patience.wait("source clickhouse", &e).await => {
                        continue
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(range) = self.range.as_mut() else {
                continue;
            };
            line.clear();
            let failure = match range.lines.read_until(b'\n', &mut line).await {
                Ok(0) => {
                    self.exhausted = range.last;
                    self.range = None;
                    continue;
                }
                Ok(_) => match parse_row(&line) {
                    Ok((key, record)) => {
                        self.after = Some(key);
                        items.push(record);
                        continue;
                    }
                    Err(e) => e,
                },
                Err(e) => e.to_string(),
            };
            // The stream broke: start again after the last row read.
            self.range = None;
            let failure = format!("source clickhouse stream: {failure}");
            if !patience.wait("source clickhouse", &failure).await {
                return Err(Failure::Transient(failure));
            }
        }
        if items.is_empty() {
            return Ok(None);
        }
        let cursor = match &self.after {
            Some((ms, id)) => Cursor::Clickhouse {
                ms: *ms,
                id: id.clone(),
            },
            None => Cursor::Start,
        };
        let read = items.len() as u64;
        Ok(Some(RawBatch {
            items,
            cursor,
            advanced: read,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_types_pick_their_sql() {
        let check = |name: &str, expected: Option<TimeColumn>| {
            assert_eq!(TimeColumn::from_type(name), expected, "{name}")
        };
        check("DateTime", Some(TimeColumn::DateTime));
        check("DateTime('UTC')", Some(TimeColumn::DateTime));
        check("DateTime64(3)", Some(TimeColumn::DateTime64));
        check("DateTime64(3, 'UTC')", Some(TimeColumn::DateTime64));
        check("Nullable(DateTime)", None);
        check("String", None);
        assert_eq!(
            TimeColumn::DateTime64.after_clause(),
            "(toUInt64(toUnixTimestamp64Milli(created)) > ? OR (toUInt64(toUnixTimestamp64Milli(created)) = ? \
             AND toString(id) > ?)) AND created >= toDateTime64(?, 3)"
        );
        assert_eq!(TimeColumn::DateTime.upto_clause().matches('?').count(), 4);
    }

    #[test]
    fn rows_carry_their_key() {
        let ((ms, id), record) =
            parse_row(br#"{"id":"u1","nsapp":"x","_import_ms":"1736080496789","_import_id":"u1"}"#)
                .expect("row");
        assert_eq!((ms, id.as_str()), (1_736_080_496_789, "u1"));
        let record = record.expect("record");
        assert_eq!(record.identity, "u1");
        assert_eq!(
            record.created,
            time::macros::datetime!(2025-01-05 12:34:56.789 UTC)
        );
        assert!(parse_row(b"Code: 241. DB::Exception: Memory limit exceeded").is_err());
        assert!(parse_row(br#"{"id":"u1"}"#).is_err());
        // Invalid UTF-8 in a text column is replaced, the row stays.
        assert!(parse_row(b"{\"nsapp\":\"a\xffb\",\"_import_ms\":1,\"_import_id\":\"i\"}").is_ok());
    }
}
