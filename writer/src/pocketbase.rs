//! The PocketBase sink: one record per install in the target collection (the original service's field
//! names), upserted by `execution_id` with the merge of `schema::merge`. Each record keeps the full merge
//! state in a hidden JSON field `merge_state`, so a later event merges with the stamps (event ids) of
//! the earlier ones and the record ends the same whatever the order or number of deliveries.
//!
//! A batch: events grouped by install and merged, the current records read back (ids quoted in the
//! filter, and only ids that pass the contract's rule get there), then one all-or-nothing `/api/batch`
//! call per chunk of creates and updates. Records whose state did not change are not written.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use schema::ids::valid_id;
use schema::merge::{merge, InstallState};
use schema::Event;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::clickhouse::unix_ms;
use crate::config::Secret;
use crate::retention::Policy;
use crate::sink::{Sink, SinkError};

/// The collection where the writer notes each collection it created, so that retention can tell the
/// fleet's own collection from one it found in place (contract §7). Superusers only, like every
/// collection without rules.
pub const BOOKKEEPING_COLLECTION: &str = "telemetry_fleet_collections";

/// What a retention run did to the target collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbRetention {
    /// This many records deleted.
    Deleted(usize),
    /// Nothing: this fleet did not create the collection and RETENTION_FOREIGN_COLLECTION is off.
    Foreign,
}

impl PbRetention {
    pub fn deleted(self) -> usize {
        match self {
            PbRetention::Deleted(n) => n,
            PbRetention::Foreign => 0,
        }
    }
}

/// A collection name as a filter literal; only letters, digits and `_` get there.
fn bookkeeping_literal(name: &str) -> Result<String, PbError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(PbError::Status {
            status: 400,
            body: format!("collection name {name:?} is not letters, digits and '_'"),
        });
    }
    Ok(format!("'{name}'"))
}

/// Ids per lookup filter: at most 64 bytes each, so the URL stays under ~20 KB (Go's limit is 1 MB) and
/// a page (at most 1000 records) holds them all.
const LOOKUP_CHUNK: usize = 200;

/// Connection settings of the sink.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub email: String,
    pub password: Secret,
    pub auth_collection: String,
    pub collection: String,
    pub batch_requests: usize,
    pub timeout: Duration,
}

/// An error of a PocketBase call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PbError {
    /// Network error, timeout, 5xx or 429.
    #[error("pocketbase unavailable: {0}")]
    Unavailable(String),
    /// Any other answer that is not a success.
    #[error("pocketbase answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl PbError {
    fn into_sink(self) -> SinkError {
        match self {
            PbError::Unavailable(text) => SinkError::Unavailable(text),
            PbError::Status { status, body } => {
                if body.contains("validation_not_unique") || status == 404 {
                    SinkError::Conflict(body)
                } else if status == 400 {
                    SinkError::Rejected(body)
                } else {
                    SinkError::Unavailable(format!("{status}: {body}"))
                }
            }
        }
    }
}

/// Writes installs to PocketBase.
pub struct PocketBaseSink {
    http: reqwest::Client,
    settings: Settings,
    token: RwLock<Option<String>>,
    batch_enabled: std::sync::atomic::AtomicBool,
}

/// A record as read back: its PocketBase id and the merge state it holds.
struct Current {
    id: String,
    state: Option<InstallState>,
}

/// The fields of the collection, in the original service's names, plus `merge_state`.
pub fn collection_fields() -> Vec<Value> {
    let text = |name: &str, max: usize| json!({"name": name, "type": "text", "max": max});
    let number = |name: &str| json!({"name": name, "type": "number", "onlyInt": true});
    vec![
        text("random_id", 64),
        json!({"name": "execution_id", "type": "text", "max": 64, "required": true}),
        text("type", 16),
        text("nsapp", 64),
        text("status", 16),
        number("ct_type"),
        number("disk_size"),
        number("core_count"),
        number("ram_size"),
        text("os_type", 32),
        text("os_version", 32),
        text("pve_version", 32),
        text("method", 32),
        text("cpu_vendor", 16),
        text("cpu_model", 64),
        text("gpu_vendor", 16),
        text("gpu_model", 64),
        text("gpu_passthrough", 16),
        text("ram_speed", 16),
        number("exit_code"),
        text("error", 200_000),
        text("error_category", 32),
        number("install_duration"),
        text("repo_source", 16),
        json!({"name": "merge_state", "type": "json", "maxSize": 2_000_000, "hidden": true}),
        json!({"name": "created", "type": "autodate", "onCreate": true, "onUpdate": false}),
        json!({"name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true}),
    ]
}

/// A string literal for a PocketBase filter: single-quoted, backslash and quote escaped. Refuses what
/// is not an id by the contract's rule, so a crafted id can never widen a filter.
pub fn filter_literal(id: &str) -> Option<String> {
    if !valid_id(id) {
        return None;
    }
    let escaped = id.replace('\\', "\\\\").replace('\'', "\\'");
    Some(format!("'{escaped}'"))
}

/// The install's duration as every store shows it: the reported one, else whole seconds from the first
/// event to the deciding final (millisecond clock, like ClickHouse's `installs_final`).
pub fn duration_secs(state: &InstallState) -> Option<u32> {
    if let Some(d) = &state.install_duration {
        return Some(d.value);
    }
    let finished = state.finished_at()?;
    let ms = unix_ms(finished).checked_sub(unix_ms(state.first_seen))?;
    u32::try_from(ms / 1000).ok()
}

/// The record body of an install.
pub fn record(state: &InstallState) -> Value {
    let text = |s: &Option<schema::merge::Stamped<String>>| {
        s.as_ref().map(|s| s.value.clone()).unwrap_or_default()
    };
    let outcome = state.outcome.as_ref();
    json!({
        "random_id": state.random_id.value,
        "execution_id": state.execution_id,
        "type": state.kind.value.as_str(),
        "nsapp": state.nsapp.value,
        "status": state.status.value.as_str(),
        "ct_type": state.ct_type.as_ref().map(|s| s.value),
        "disk_size": state.disk_size.as_ref().map(|s| s.value),
        "core_count": state.core_count.as_ref().map(|s| s.value),
        "ram_size": state.ram_size.as_ref().map(|s| s.value),
        "os_type": text(&state.os_type),
        "os_version": text(&state.os_version),
        "pve_version": text(&state.pve_version),
        "method": text(&state.method),
        "cpu_vendor": state.cpu_vendor.as_ref().map(|s| s.value.as_str()).unwrap_or_default(),
        "cpu_model": text(&state.cpu_model),
        "gpu_vendor": state.gpu_vendor.as_ref().map(|s| s.value.as_str()).unwrap_or_default(),
        "gpu_model": text(&state.gpu_model),
        "gpu_passthrough": state.gpu_passthrough.as_ref().map(|s| s.value.as_str()).unwrap_or_default(),
        "ram_speed": text(&state.ram_speed),
        "exit_code": outcome.and_then(|o| o.exit_code),
        "error": outcome.and_then(|o| o.error.clone()).unwrap_or_default(),
        "error_category": outcome.and_then(|o| o.error_category).map(|c| c.as_str()).unwrap_or_default(),
        "install_duration": duration_secs(state),
        "repo_source": state.repo_source.value.as_str(),
        "merge_state": state,
    })
}

fn network(e: reqwest::Error) -> PbError {
    PbError::Unavailable(e.to_string())
}

impl PocketBaseSink {
    pub fn new(settings: Settings) -> anyhow::Result<PocketBaseSink> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(PocketBaseSink {
            http,
            settings,
            token: RwLock::new(None),
            batch_enabled: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn collection(&self) -> &str {
        &self.settings.collection
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.url.trim_end_matches('/'))
    }

    async fn login(&self) -> Result<String, PbError> {
        let path = format!(
            "/api/collections/{}/auth-with-password",
            self.settings.auth_collection
        );
        let resp = self
            .http
            .post(self.url(&path))
            .json(&json!({"identity": self.settings.email, "password": self.settings.password.expose()}))
            .send()
            .await
            .map_err(network)?;
        let status = resp.status();
        let body: Value = read(resp).await?;
        if !status.is_success() {
            return Err(status_error(status, &body));
        }
        let token = body["token"]
            .as_str()
            .ok_or_else(|| PbError::Unavailable("login answer has no token".into()))?
            .to_string();
        if let Ok(mut slot) = self.token.write() {
            *slot = Some(token.clone());
        }
        Ok(token)
    }

    async fn token(&self) -> Result<String, PbError> {
        let cached = self.token.read().ok().and_then(|t| t.clone());
        match cached {
            Some(token) => Ok(token),
            None => self.login().await,
        }
    }

    /// One authenticated call; logs in again once when the token expired.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, PbError> {
        let mut relogged = false;
        loop {
            let token = self.token().await?;
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .header("authorization", token);
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.map_err(network)?;
            let status = resp.status();
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && !relogged {
                relogged = true;
                if let Ok(mut slot) = self.token.write() {
                    *slot = None;
                }
                continue;
            }
            let value = read(resp).await?;
            if status.is_success() {
                return Ok(value);
            }
            return Err(status_error(status, &value));
        }
    }

    /// Creates the collection if missing (noting in [`BOOKKEEPING_COLLECTION`] that the fleet made it)
    /// and adds any of our fields an existing one lacks (the original's collection has no
    /// `merge_state`). Then enables the batch API if these credentials may change settings; without
    /// it, records are written one request at a time.
    pub async fn prepare(&self) -> Result<(), PbError> {
        let name = &self.settings.collection;
        let path = format!("/api/collections/{name}");
        match self.call(Method::GET, &path, None).await {
            Ok(existing) => {
                let have: Vec<&str> = existing["fields"]
                    .as_array()
                    .map(|f| f.iter().filter_map(|f| f["name"].as_str()).collect())
                    .unwrap_or_default();
                let missing: Vec<Value> = collection_fields()
                    .into_iter()
                    .filter(|f| f["name"].as_str().is_some_and(|n| !have.contains(&n)))
                    .collect();
                if !missing.is_empty() {
                    let mut fields = existing["fields"].as_array().cloned().unwrap_or_default();
                    let names: Vec<String> = missing
                        .iter()
                        .filter_map(|f| f["name"].as_str().map(str::to_string))
                        .collect();
                    fields.extend(missing);
                    self.call(Method::PATCH, &path, Some(&json!({"fields": fields})))
                        .await?;
                    tracing::info!(collection = %name, fields = ?names, "pocketbase collection fields added");
                }
            }
            Err(PbError::Status { status: 404, .. }) => {
                // Noted first: a collection that exists without the note is never the fleet's.
                self.note_created().await?;
                let definition = json!({
                    "name": name,
                    "type": "base",
                    "fields": collection_fields(),
                    "indexes": [format!("CREATE UNIQUE INDEX idx_{name}_execution_id ON {name} (execution_id)")],
                });
                self.call(Method::POST, "/api/collections", Some(&definition))
                    .await?;
                tracing::info!(collection = %name, "pocketbase collection created");
            }
            Err(e) => return Err(e),
        }
        let batch = json!({"batch": {"enabled": true, "maxRequests": self.settings.batch_requests, "timeout": 30}});
        match self
            .call(Method::PATCH, "/api/settings", Some(&batch))
            .await
        {
            Ok(_) => {
                self.batch_enabled
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Err(PbError::Unavailable(e)) => return Err(PbError::Unavailable(e)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot enable the pocketbase batch API, writing one record per request");
            }
        }
        Ok(())
    }

    /// The records of these installs, by execution id. The chunks are read concurrently (SQLite serves
    /// reads in parallel with WAL).
    async fn lookup(&self, ids: &[&str]) -> Result<HashMap<String, Current>, SinkError> {
        let pages = futures::future::try_join_all(
            ids.chunks(LOOKUP_CHUNK)
                .map(|chunk| self.lookup_chunk(chunk)),
        )
        .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    async fn lookup_chunk(&self, chunk: &[&str]) -> Result<Vec<(String, Current)>, SinkError> {
        let mut terms = Vec::with_capacity(chunk.len());
        for id in chunk {
            let literal = filter_literal(id).ok_or_else(|| {
                SinkError::Rejected("execution_id breaks the contract's id rule".into())
            })?;
            terms.push(format!("execution_id={literal}"));
        }
        let filter = terms.join("||");
        let path = format!(
            "/api/collections/{}/records?perPage={}&skipTotal=1&fields=id,execution_id,merge_state&filter={}",
            self.settings.collection,
            chunk.len().max(1),
            encode(&format!("({filter})")),
        );
        let page = self
            .call(Method::GET, &path, None)
            .await
            .map_err(PbError::into_sink)?;
        let mut found = Vec::new();
        for item in page["items"].as_array().into_iter().flatten() {
            let (Some(id), Some(execution_id)) =
                (item["id"].as_str(), item["execution_id"].as_str())
            else {
                continue;
            };
            let state = serde_json::from_value::<InstallState>(item["merge_state"].clone()).ok();
            found.push((
                execution_id.to_string(),
                Current {
                    id: id.to_string(),
                    state,
                },
            ));
        }
        Ok(found)
    }

    async fn send_requests(&self, requests: Vec<Value>) -> Result<(), SinkError> {
        if requests.is_empty() {
            return Ok(());
        }
        if self
            .batch_enabled
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            for chunk in requests.chunks(self.settings.batch_requests.max(1)) {
                self.call(
                    Method::POST,
                    "/api/batch",
                    Some(&json!({"requests": chunk})),
                )
                .await
                .map_err(PbError::into_sink)?;
            }
        } else {
            for request in &requests {
                let method = match request["method"].as_str() {
                    Some("PATCH") => Method::PATCH,
                    Some("DELETE") => Method::DELETE,
                    _ => Method::POST,
                };
                let path = request["url"].as_str().unwrap_or_default();
                let body = request.get("body");
                self.call(method, path, body)
                    .await
                    .map_err(PbError::into_sink)?;
            }
        }
        Ok(())
    }

    /// Deletes, in batches, up to `policy.max_per_run` records of installs whose record was created
    /// (by the install's first event) more than `policy.days` before `now`. Touches the collection only
    /// when this fleet created it ([`PocketBaseSink::created_here`]) or the policy allows a foreign one.
    pub async fn retention(
        &self,
        now: OffsetDateTime,
        policy: &Policy,
    ) -> Result<PbRetention, PbError> {
        let collection = &self.settings.collection;
        if !policy.foreign_collection && !self.created_here().await? {
            tracing::info!(
                collection = %collection,
                "retention leaves this collection alone: this fleet did not create it (RETENTION_FOREIGN_COLLECTION=true includes it)"
            );
            return Ok(PbRetention::Foreign);
        }
        let cutoff = policy.cutoff(now);
        let cutoff = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.000Z",
            cutoff.year(),
            u8::from(cutoff.month()),
            cutoff.day(),
            cutoff.hour(),
            cutoff.minute(),
            cutoff.second()
        );
        let mut deleted = 0;
        while deleted < policy.max_per_run {
            let per_page = self
                .settings
                .batch_requests
                .clamp(1, 500)
                .min(policy.max_per_run - deleted);
            let path = format!(
                "/api/collections/{collection}/records?perPage={per_page}&skipTotal=1&fields=id&filter={}",
                encode(&format!("(created<'{cutoff}')"))
            );
            let page = self.call(Method::GET, &path, None).await?;
            let ids: Vec<String> = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["id"].as_str())
                .filter(|id| id.bytes().all(|b| b.is_ascii_alphanumeric()))
                .map(str::to_string)
                .collect();
            if ids.is_empty() {
                break;
            }
            let requests: Vec<Value> = ids
                .iter()
                .map(|id| json!({"method": "DELETE", "url": format!("/api/collections/{collection}/records/{id}")}))
                .collect();
            let count = requests.len();
            self.send_requests(requests).await.map_err(|e| match e {
                SinkError::Unavailable(t) | SinkError::Conflict(t) | SinkError::Rejected(t) => {
                    PbError::Unavailable(t)
                }
            })?;
            deleted += count;
        }
        if deleted > 0 {
            tracing::info!(collection = %collection, records = deleted, cutoff = %cutoff, "retention deleted records");
        }
        Ok(PbRetention::Deleted(deleted))
    }

    /// True when this fleet created the target collection: [`PocketBaseSink::prepare`] noted it in
    /// [`BOOKKEEPING_COLLECTION`] before creating it. A collection found in place (the running service's)
    /// has no such note.
    pub async fn created_here(&self) -> Result<bool, PbError> {
        let name = bookkeeping_literal(&self.settings.collection)?;
        let path = format!(
            "/api/collections/{BOOKKEEPING_COLLECTION}/records?perPage=1&skipTotal=1&fields=id&filter={}",
            encode(&format!("(collection={name})"))
        );
        match self.call(Method::GET, &path, None).await {
            Ok(page) => Ok(page["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())),
            Err(PbError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Notes in [`BOOKKEEPING_COLLECTION`] (created when missing) that this fleet creates the target
    /// collection. Idempotent, and safe when replicas do it at once.
    async fn note_created(&self) -> Result<(), PbError> {
        let name = &self.settings.collection;
        bookkeeping_literal(name)?;
        let path = format!("/api/collections/{BOOKKEEPING_COLLECTION}");
        match self.call(Method::GET, &path, None).await {
            Ok(_) => {}
            Err(PbError::Status { status: 404, .. }) => {
                let definition = json!({
                    "name": BOOKKEEPING_COLLECTION,
                    "type": "base",
                    "fields": [
                        {"name": "collection", "type": "text", "max": 64, "required": true},
                        {"name": "created_by", "type": "text", "max": 64},
                        {"name": "created", "type": "autodate", "onCreate": true, "onUpdate": false},
                    ],
                    "indexes": [format!("CREATE UNIQUE INDEX idx_{BOOKKEEPING_COLLECTION}_collection ON {BOOKKEEPING_COLLECTION} (collection)")],
                });
                // 400: another replica created it a moment ago.
                match self
                    .call(Method::POST, "/api/collections", Some(&definition))
                    .await
                {
                    Ok(_) | Err(PbError::Status { status: 400, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        let note = json!({"collection": name, "created_by": "telemetry-writer"});
        let records = format!("/api/collections/{BOOKKEEPING_COLLECTION}/records");
        match self.call(Method::POST, &records, Some(&note)).await {
            Ok(_) => Ok(()),
            Err(PbError::Status { status: 400, body })
                if body.contains("validation_not_unique") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Every record of the collection (tests and the benchmark read them back).
    pub async fn records(&self) -> Result<Vec<Value>, PbError> {
        let mut out = Vec::new();
        for page in 1.. {
            let path = format!(
                "/api/collections/{}/records?perPage=500&page={page}&skipTotal=1&sort=execution_id",
                self.settings.collection
            );
            let body = self.call(Method::GET, &path, None).await?;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            let done = items.len() < 500;
            out.extend(items);
            if done {
                break;
            }
        }
        Ok(out)
    }
}

impl Sink for PocketBaseSink {
    fn name(&self) -> &'static str {
        "pocketbase"
    }

    async fn write(&self, events: &[Event]) -> Result<(), SinkError> {
        let mut groups: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for event in events {
            if !valid_id(&event.execution_id) {
                return Err(SinkError::Rejected(
                    "execution_id breaks the contract's id rule".into(),
                ));
            }
            groups.entry(&event.execution_id).or_default().push(event);
        }
        let ids: Vec<&str> = groups.keys().copied().collect();
        let current = self.lookup(&ids).await?;
        let collection = &self.settings.collection;
        let mut requests = Vec::new();
        for (id, group) in groups {
            let prior = current.get(id);
            let before = prior.and_then(|c| c.state.clone());
            let mut state = before.clone();
            for event in group {
                state = Some(merge(state, event));
            }
            let Some(state) = state else { continue };
            if before.as_ref() == Some(&state) {
                continue;
            }
            let body = record(&state);
            requests.push(match prior {
                Some(c) => json!({"method": "PATCH", "url": format!("/api/collections/{collection}/records/{}", c.id), "body": body}),
                None => json!({"method": "POST", "url": format!("/api/collections/{collection}/records"), "body": body}),
            });
        }
        self.send_requests(requests).await
    }
}

async fn read(resp: reqwest::Response) -> Result<Value, PbError> {
    let bytes = resp.bytes().await.map_err(network)?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

fn status_error(status: StatusCode, body: &Value) -> PbError {
    let text = body.to_string();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        PbError::Unavailable(format!("{status}: {text}"))
    } else {
        PbError::Status {
            status: status.as_u16(),
            body: text,
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_literals_are_quoted_and_refuse_non_ids() {
        let check = |id: &str, expected: Option<&str>| {
            assert_eq!(filter_literal(id).as_deref(), expected, "{id:?}");
        };
        check("abc-1", Some("'abc-1'"));
        check("a.b:c_d", Some("'a.b:c_d'"));
        check("x' || execution_id != '", None);
        check("x\" || 1=1 || \"", None);
        check("a\\", None);
        check("", None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("(a='b'||c)"), "%28a%3D%27b%27%7C%7Cc%29");
        assert_eq!(encode("x-y_z.~"), "x-y_z.~");
    }

    #[test]
    fn errors_are_sorted_into_retry_conflict_and_reject() {
        let check = |e: PbError, expected: &str| {
            let got = match e.into_sink() {
                SinkError::Unavailable(_) => "retry",
                SinkError::Conflict(_) => "conflict",
                SinkError::Rejected(_) => "reject",
            };
            assert_eq!(got, expected);
        };
        check(PbError::Unavailable("refused".into()), "retry");
        check(
            PbError::Status {
                status: 400,
                body: r#"{"data":{"execution_id":{"code":"validation_not_unique"}}}"#.into(),
            },
            "conflict",
        );
        check(
            PbError::Status {
                status: 400,
                body: r#"{"data":{"nsapp":{"code":"validation_max_text_constraint"}}}"#.into(),
            },
            "reject",
        );
        check(
            PbError::Status {
                status: 404,
                body: "{}".into(),
            },
            "conflict",
        );
        check(
            PbError::Status {
                status: 401,
                body: "{}".into(),
            },
            "retry",
        );
    }

    #[test]
    fn record_takes_the_outcome_from_the_deciding_final() {
        let accept = |body: &str| {
            schema::validate(body.as_bytes(), schema::Reception::now())
                .expect("valid")
                .event
        };
        let installing = accept(
            r#"{"random_id":"r1","type":"lxc","nsapp":"app","status":"installing","disk_size":8}"#,
        );
        let unknown = accept(
            r#"{"random_id":"r1","type":"lxc","nsapp":"app","status":"unknown","exit_code":5}"#,
        );
        let success = accept(r#"{"random_id":"r1","type":"lxc","nsapp":"app","status":"success"}"#);
        let mut state = None;
        for e in [&success, &installing, &unknown] {
            state = Some(merge(state, e));
        }
        let body = record(&state.expect("state"));
        assert_eq!(body["status"], "success");
        assert_eq!(body["exit_code"], Value::Null);
        assert_eq!(body["disk_size"], 8);
        assert_eq!(body["execution_id"], "r1");
    }
}
