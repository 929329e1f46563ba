//! Reading the running service's PocketBase collection: pages of up to 1000 records (`skipTotal`, so
//! PocketBase never counts), sorted by `created,id` and continued from the last record's key (a filter
//! `created >= c && (created > c || id > i)`), never by page number, so a page costs the same at the end
//! as at the start, given an index on `created`. Records are read in the order they were received,
//! which keeps each ClickHouse insert inside a few day partitions.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::config::PocketBaseArgs;
use super::map::{created_of, identity_of, Record};
use super::state::Cursor;
use super::{Failure, Patience, RawBatch};
use fleet::Secret;

/// Deadline of one PocketBase request (a page of 1000 records with long logs is a few MB).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of building the index on `created` over millions of records.
const INDEX_TIMEOUT: Duration = Duration::from_secs(1800);

struct Login {
    auth_collection: String,
    identity: String,
    password: Secret,
}

/// A reader of one collection, from a cursor on.
pub struct PocketBaseReader {
    http: reqwest::Client,
    base: String,
    collection: String,
    login: Option<Login>,
    token: Option<String>,
    page_size: u32,
    /// `created` and `id` of the last record read.
    after: Option<(String, String)>,
    exhausted: bool,
    retry_for: Duration,
}

/// A string literal of a PocketBase filter.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// True when one of the collection's index definitions starts with the column `created`.
pub fn has_created_index(indexes: &[Value]) -> bool {
    indexes.iter().filter_map(Value::as_str).any(|sql| {
        sql.split_once('(')
            .and_then(|(_, cols)| cols.split([',', ')']).next())
            .map(|first| {
                first
                    .trim()
                    .trim_matches(['`', '"', '[', ']'])
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .eq_ignore_ascii_case("created")
            })
            .unwrap_or(false)
    })
}

impl PocketBaseReader {
    /// Logs in (when an identity is given), checks the collection and its index on `created`.
    pub async fn open(
        args: &PocketBaseArgs,
        cursor: &Cursor,
        retry_for: Duration,
    ) -> Result<PocketBaseReader, Failure> {
        let after = match cursor {
            Cursor::Start => None,
            Cursor::Pocketbase { created, id } => Some((created.clone(), id.clone())),
            other => {
                return Err(Failure::Permanent(format!(
                    "the checkpoint holds a cursor of another source: {other:?}"
                )))
            }
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let login = (!args.identity.is_empty()).then(|| Login {
            auth_collection: args.auth_collection.clone(),
            identity: args.identity.clone(),
            password: args.password.clone(),
        });
        let mut reader = PocketBaseReader {
            http,
            base: args.url.trim_end_matches('/').to_string(),
            collection: args.collection.clone(),
            login,
            token: None,
            page_size: args.page_size,
            after,
            exhausted: false,
            retry_for,
        };
        reader.check_collection(args.create_index).await?;
        Ok(reader)
    }

    async fn log_in(&mut self) -> Result<(), Failure> {
        let Some(login) = &self.login else {
            return Ok(());
        };
        let url = format!(
            "{}/api/collections/{}/auth-with-password",
            self.base, login.auth_collection
        );
        let body = json!({"identity": login.identity, "password": login.password.expose()});
        let resp = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| Failure::Transient(format!("pocketbase login: {e}")))?;
        let status = resp.status();
        let value = read(resp).await?;
        classify(status, &value, "login")?;
        let token = value["token"].as_str().ok_or_else(|| {
            Failure::Permanent("pocketbase login answered without a token".into())
        })?;
        self.token = Some(token.to_string());
        Ok(())
    }

    /// One request, logged in, logging in again once when the token expired.
    async fn call_once(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let mut relogged = false;
        loop {
            if self.token.is_none() && self.login.is_some() {
                self.log_in().await?;
            }
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .query(query)
                .timeout(timeout);
            if let Some(token) = &self.token {
                req = req.header("authorization", token);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| Failure::Transient(format!("pocketbase: {e}")))?;
            let status = resp.status();
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                && self.login.is_some()
                && !relogged
            {
                relogged = true;
                self.token = None;
                continue;
            }
            let value = read(resp).await?;
            return classify(status, &value, path).map(|()| value);
        }
    }

    /// [`PocketBaseReader::call_once`], retried while PocketBase is unavailable, for `retry_for`.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let mut patience = Patience::new(self.retry_for);
        loop {
            match self
                .call_once(method.clone(), path, query, body, timeout)
                .await
            {
                Err(Failure::Transient(e)) if patience.wait("source pocketbase", &e).await => {}
                other => return other,
            }
        }
    }

    /// The collection must exist and have `created`; without an index on `created` every page scans
    /// the whole collection, so one is added on request, else the operator is warned.
    async fn check_collection(&mut self, create_index: bool) -> Result<(), Failure> {
        let path = format!("/api/collections/{}", self.collection);
        let definition = match self
            .call(Method::GET, &path, &[], None, REQUEST_TIMEOUT)
            .await
        {
            Ok(definition) => definition,
            Err(Failure::Denied(_)) => {
                // Only superusers may read a collection's definition; the records may still be listed.
                tracing::info!(
                    collection = %self.collection,
                    "cannot read the collection's definition with these credentials, its indexes are not checked"
                );
                return self.probe().await;
            }
            Err(e) => return Err(e),
        };
        let fields: Vec<&str> = definition["fields"]
            .as_array()
            .map(|f| f.iter().filter_map(|f| f["name"].as_str()).collect())
            .unwrap_or_default();
        if !fields.is_empty() && !fields.contains(&"created") {
            return Err(Failure::Permanent(format!(
                "collection {} has no field `created`, so its records have no reception time",
                self.collection
            )));
        }
        let indexes = definition["indexes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if has_created_index(&indexes) {
            return Ok(());
        }
        if !create_index {
            tracing::warn!(
                collection = %self.collection,
                "the collection has no index on `created`: every page scans the whole collection; \
                 --create-index adds one on (created, id)"
            );
            return Ok(());
        }
        let name = self.collection.clone();
        let mut all = indexes;
        all.push(Value::String(format!(
            "CREATE INDEX `idx_{name}_created_id` ON `{name}` (`created`, `id`)"
        )));
        tracing::info!(collection = %name, "adding an index on (created, id)");
        self.call(
            Method::PATCH,
            &path,
            &[],
            Some(&json!({"indexes": all})),
            INDEX_TIMEOUT,
        )
        .await?;
        tracing::info!(collection = %name, "index on (created, id) added");
        Ok(())
    }

    /// Reads one record, to fail early when the collection is missing or may not be listed.
    async fn probe(&mut self) -> Result<(), Failure> {
        let path = format!("/api/collections/{}/records", self.collection);
        let query = [
            ("perPage", "1".to_string()),
            ("skipTotal", "1".to_string()),
            ("fields", "id".to_string()),
        ];
        self.call(Method::GET, &path, &query, None, REQUEST_TIMEOUT)
            .await
            .map(|_| ())
    }

    fn filter(&self) -> Option<String> {
        self.after.as_ref().map(|(created, id)| {
            let (c, i) = (literal(created), literal(id));
            format!("created>={c} && (created>{c} || id>{i})")
        })
    }

    /// Records after the cursor (one request, PocketBase counts); `None` when it cannot say.
    pub async fn remaining(&mut self) -> Option<u64> {
        let path = format!("/api/collections/{}/records", self.collection);
        let mut query = vec![("perPage", "1".to_string()), ("fields", "id".to_string())];
        if let Some(filter) = self.filter() {
            query.push(("filter", filter));
        }
        match self
            .call_once(Method::GET, &path, &query, None, REQUEST_TIMEOUT)
            .await
        {
            Ok(page) => page["totalItems"].as_u64(),
            Err(e) => {
                tracing::info!(error = %e, "cannot count the records, progress without a total");
                None
            }
        }
    }

    /// The next records, up to `max` (whole pages), or `None` at the end of the collection.
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<RawBatch>, Failure> {
        let mut items = Vec::new();
        while items.len() < max && !self.exhausted {
            let page = self.page().await?;
            if page.is_empty() {
                self.exhausted = true;
                break;
            }
            for item in page {
                let Value::Object(fields) = item else {
                    items.push(Err("invalid_json".to_string()));
                    continue;
                };
                let (Some(id), Some(created_raw)) = (
                    identity_of(fields.get("id")),
                    fields.get("created").and_then(Value::as_str),
                ) else {
                    items.push(Err(super::map::MISSING_CREATED.to_string()));
                    continue;
                };
                let key = (created_raw.to_string(), id.clone());
                if self.after.as_ref().is_some_and(|after| &key <= after) {
                    return Err(Failure::Permanent(format!(
                        "the collection's order did not advance at created={} id={}: its `created` values \
                         do not sort as PocketBase shows them",
                        key.0, key.1
                    )));
                }
                self.after = Some(key);
                items.push(created_of(&fields, &["created"]).map(|created| Record {
                    identity: id,
                    created,
                    fields,
                    rescued: Vec::new(),
                }));
            }
        }
        if items.is_empty() {
            return Ok(None);
        }
        let cursor = match &self.after {
            Some((created, id)) => Cursor::Pocketbase {
                created: created.clone(),
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

    async fn page(&mut self) -> Result<Vec<Value>, Failure> {
        let path = format!("/api/collections/{}/records", self.collection);
        let mut query = vec![
            ("perPage", self.page_size.to_string()),
            ("skipTotal", "1".to_string()),
            ("sort", "created,id".to_string()),
        ];
        if let Some(filter) = self.filter() {
            query.push(("filter", filter));
        }
        let mut page = self
            .call(Method::GET, &path, &query, None, REQUEST_TIMEOUT)
            .await?;
        match page.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(Failure::Permanent(format!(
                "pocketbase answered a page without items: {}",
                super::cut(&page.to_string(), 200)
            ))),
        }
    }
}

/// The body of an answer as JSON (a text body becomes a string).
async fn read(resp: reqwest::Response) -> Result<Value, Failure> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Failure::Transient(format!("pocketbase: {e}")))?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

/// Success, or why not: 5xx and 429 may pass, 401 and 403 are a matter of rights, the rest will not
/// change by retrying.
fn classify(status: StatusCode, body: &Value, what: &str) -> Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    let text = format!(
        "pocketbase {what} answered {}: {}",
        status.as_u16(),
        super::cut(&body.to_string(), 300)
    );
    Err(match status {
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => Failure::Transient(text),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Failure::Denied(text),
        _ => Failure::Permanent(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_on_created_is_recognized() {
        let check = |indexes: Value, expected: bool| {
            let list = indexes.as_array().cloned().expect("array");
            assert_eq!(has_created_index(&list), expected, "{indexes}");
        };
        check(
            json!(["CREATE INDEX `idx_t_created` ON `telemetry` (`created`)"]),
            true,
        );
        check(
            json!(["CREATE INDEX idx ON telemetry (created DESC, id)"]),
            true,
        );
        check(
            json!(["CREATE UNIQUE INDEX `u` ON `telemetry` (`execution_id`)"]),
            false,
        );
        check(
            json!(["CREATE INDEX `i` ON `telemetry` (`nsapp`, `created`)"]),
            false,
        );
        check(json!([]), false);
    }

    #[test]
    fn filter_literals_are_quoted() {
        assert_eq!(
            literal("2025-01-01 00:00:00.000Z"),
            "'2025-01-01 00:00:00.000Z'"
        );
        assert_eq!(literal("a'b\\"), "'a\\'b\\\\'");
    }
}
