//! The PocketBase sink: one record per install in the target collection (the original service's field
//! names), upserted by `execution_id` with the merge of `schema::merge`. In a collection the writer
//! created, each record keeps the full merge state in a hidden JSON field `merge_state`, so a later event
//! merges with the stamps (event ids) of the earlier ones and the record ends the same whatever the order
//! or number of deliveries. In the running service's collection, which has no such field, the state is
//! rebuilt from the record's own fields ([`layout`]).
//!
//! At start ([`PocketBaseSink::prepare`]) the writer reads the collection and the instance's settings and
//! lists in one log line what it would change (fields, an index, the batch API); it changes a collection
//! only when it created it or the operator allows schema changes, and the settings only when the operator
//! allows settings changes. Whether it created the collection is noted in the collection's own definition
//! ([`layout::CREATED_MARKER`]) and answered by [`PocketBaseSink::created_by_fleet`].
//!
//! A batch: events grouped by install and merged, the current records read back (ids quoted in the
//! filter, and only ids that pass the contract's rule get there), then one all-or-nothing `/api/batch`
//! call per chunk of creates and updates when the batch API is enabled, else one request per record
//! (each all-or-nothing on its own). Records whose state did not change are not written.

pub mod layout;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use schema::ids::valid_id;
use schema::merge::{forged, merge, InstallState};
use schema::Event;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::clickhouse::unix_ms;
use crate::config::Secret;
use crate::lease::Fence;
use crate::metrics::{FORGED_EVENTS, SELECT_REPLACED};
use crate::retention::Policy;
use crate::sink::{Sink, SinkError};
use layout::{Change, Layout};

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

/// Ids per lookup filter: at most 64 bytes each, so the URL stays under ~20 KB (Go's limit is 1 MB) and
/// a page (at most 1000 records) holds them all.
const LOOKUP_CHUNK: usize = 200;

/// The batch API's transaction timeout the writer asks for, in seconds (PocketBase's default is 3).
const BATCH_TIMEOUT_SECS: u64 = 30;

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
    /// May change the definition of a collection the writer did not create (`PB_ALLOW_SCHEMA_CHANGES`).
    pub allow_schema_changes: bool,
    /// May change the instance's settings: the batch API (`PB_ALLOW_SETTINGS_CHANGES`).
    pub allow_settings_changes: bool,
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
    /// The collection cannot hold installs as it is, and the writer may not change it.
    #[error("pocketbase collection unusable: {0}")]
    Incompatible(String),
}

impl PbError {
    /// The one place a PocketBase answer becomes transient or permanent. Only a refusal of the record
    /// itself (a field error of the collection's rules, `validation_…` other than `not_unique`, also
    /// inside a batch answer) is permanent and may dead-letter an event. PocketBase answers 400 also when
    /// its database failed ("Failed to create record." with no field errors, e.g. SQLite busy, or a
    /// batch transaction timing out) or a batch as a whole did not go ("Something went wrong while
    /// processing your request."): that is not bad data, so it is `Unclear` (split, retried, never
    /// dead-lettered), like a connection error, a timeout, a 5xx or a 429 are `Unavailable`.
    fn into_sink(self) -> SinkError {
        match self {
            PbError::Unavailable(text) | PbError::Incompatible(text) => {
                SinkError::Unavailable(text)
            }
            PbError::Status { status, body } => {
                if body.contains("validation_not_unique") || status == 404 {
                    SinkError::Conflict(body)
                } else if (400..500).contains(&status) && refuses_a_field(&body) {
                    SinkError::Rejected(body)
                } else if status == 400 {
                    SinkError::Unclear(body)
                } else {
                    SinkError::Unavailable(format!("{status}: {body}"))
                }
            }
        }
    }
}

/// True when a PocketBase error body names a field error (`"code": "validation_…"`) anywhere in its
/// `data` (a batch nests the failed request's answer there).
fn refuses_a_field(body: &str) -> bool {
    fn walk(value: &Value) -> bool {
        match value {
            Value::Object(map) => map.iter().any(|(key, v)| {
                (key == "code"
                    && v.as_str().is_some_and(|c| {
                        c.starts_with("validation_") && c != "validation_not_unique"
                    }))
                    || walk(v)
            }),
            Value::Array(items) => items.iter().any(walk),
            _ => false,
        }
    }
    serde_json::from_str::<Value>(body).is_ok_and(|v| walk(&v["data"]))
}

/// Writes installs to PocketBase.
pub struct PocketBaseSink {
    http: reqwest::Client,
    settings: Settings,
    token: RwLock<Option<String>>,
    /// Requests per `/api/batch` call; 0 while the batch API is not to be used.
    batch_chunk: AtomicUsize,
    prepared: RwLock<Option<Arc<Prepared>>>,
    /// The lease every write request is checked against ([`PocketBaseSink::fence_with`]).
    fence: OnceLock<Fence>,
}

/// What [`PocketBaseSink::prepare`] found and decided.
#[derive(Debug)]
struct Prepared {
    layout: Layout,
    /// Every change the writer would make, as listed at start (done or not).
    listed: Vec<String>,
    /// Fields of [`collection_fields`] the collection lacks, never written.
    unwritten: Vec<String>,
}

/// A record as read back: its PocketBase id, the fields the writer reads, and the merge state it holds
/// (None when the collection or this record has none).
struct Current {
    id: String,
    record: Value,
    state: Option<InstallState>,
}

/// The batch API part of `/api/settings`.
#[derive(Debug, Clone, Copy)]
struct BatchSettings {
    enabled: bool,
    max_requests: u64,
    timeout: u64,
}

impl BatchSettings {
    fn read(batch: &Value) -> BatchSettings {
        BatchSettings {
            enabled: batch["enabled"].as_bool().unwrap_or(false),
            max_requests: batch["maxRequests"].as_u64().unwrap_or(0),
            timeout: batch["timeout"].as_u64().unwrap_or(0),
        }
    }

    /// What to change so that batches of `wanted` requests go through, if anything.
    fn change(self, wanted: usize) -> Option<Change> {
        let wanted = wanted as u64;
        let enough =
            self.enabled && self.max_requests >= wanted && self.timeout >= BATCH_TIMEOUT_SECS;
        (!enough).then_some(Change::Batch {
            enabled: self.enabled,
            max_requests: self.max_requests,
            timeout: self.timeout,
            wanted_requests: self.max_requests.max(wanted),
            wanted_timeout: self.timeout.max(BATCH_TIMEOUT_SECS),
        })
    }

    /// Requests per batch call the writer uses: 0 while disabled.
    fn chunk(self, wanted: usize) -> usize {
        if self.enabled {
            wanted.min(usize::try_from(self.max_requests).unwrap_or(usize::MAX))
        } else {
            0
        }
    }
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
        text("repo_slug", 128),
        json!({"name": "has_arm", "type": "bool"}),
        text("arch", 16),
        json!({"name": "merge_state", "type": "json", "maxSize": 2_000_000, "hidden": true}),
        json!({"name": "created", "type": "autodate", "onCreate": true, "onUpdate": false}),
        json!({"name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true}),
    ]
}

/// The definition of a collection the writer creates: complete (every field of [`collection_fields`],
/// the unique index on `execution_id`) and marked as created by the writer ([`layout::CREATED_HELP`] on
/// `execution_id`, the one place the writer never writes into a collection it did not create).
pub fn creation_definition(name: &str) -> Value {
    let fields: Vec<Value> = collection_fields()
        .into_iter()
        .map(|mut f| {
            if f["name"] == "execution_id" {
                f["help"] = json!(layout::CREATED_HELP);
            }
            f
        })
        .collect();
    json!({
        "name": name,
        "type": "base",
        "fields": fields,
        "indexes": [format!("CREATE UNIQUE INDEX idx_{name}_execution_id ON {name} (execution_id)")],
    })
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

/// The install's duration as every store shows it: the reported one (the deciding final's, else the
/// largest any event carried), else whole seconds from the first event to the deciding final
/// (millisecond clock, like ClickHouse's `installs_final`).
pub fn duration_secs(state: &InstallState) -> Option<u32> {
    if let Some(d) = state.reported_duration() {
        return Some(d);
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
        "repo_slug": text(&state.repo_slug),
        // A bool field has no "absent": false unless an event said true (merge_state keeps the absence).
        "has_arm": state.has_arm.as_ref().is_some_and(|s| s.value),
        "arch": text(&state.arch),
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
            batch_chunk: AtomicUsize::new(0),
            prepared: RwLock::new(None),
            fence: OnceLock::new(),
        })
    }

    fn prepared(&self) -> Option<Arc<Prepared>> {
        self.prepared.read().ok().and_then(|p| p.clone())
    }

    /// True when this fleet's writer created the collection (it carries [`layout::CREATED_MARKER`]).
    /// False before [`PocketBaseSink::prepare`] succeeded, for a collection someone else created, and
    /// for one created by a writer older than the marker. Never delete from a collection where this is
    /// false unless the operator opted in.
    pub fn created_by_fleet(&self) -> bool {
        self.prepared().is_some_and(|p| p.layout.created_by_fleet)
    }

    /// The changes listed at start (`would change: …`), done or not.
    pub fn listed_changes(&self) -> Vec<String> {
        self.prepared()
            .map(|p| p.listed.clone())
            .unwrap_or_default()
    }

    /// The writer's fields the collection lacks, which are not written.
    pub fn unwritten_fields(&self) -> Vec<String> {
        self.prepared()
            .map(|p| p.unwritten.clone())
            .unwrap_or_default()
    }

    /// True when records are written through `/api/batch`, false for one request per record.
    pub fn uses_batch(&self) -> bool {
        self.batch_chunk.load(Ordering::Relaxed) > 0
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

    /// Reads the collection (creating it, complete, when missing) and the batch API settings; lists in
    /// one log line everything it would change; changes the collection only when the writer created it
    /// or `allow_schema_changes`, the settings only when `allow_settings_changes`. Without them it
    /// writes the fields the collection has, one request per record unless the batch API is already
    /// enabled. Idempotent: a second start finds nothing to change.
    pub async fn prepare(&self) -> Result<(), PbError> {
        let name = &self.settings.collection;
        let path = format!("/api/collections/{name}");
        let definition = match self.call(Method::GET, &path, None).await {
            Ok(existing) => existing,
            Err(PbError::Status { status: 404, .. }) => {
                let created = self
                    .call(
                        Method::POST,
                        "/api/collections",
                        Some(&creation_definition(name)),
                    )
                    .await?;
                tracing::info!(collection = %name, "pocketbase collection created");
                created
            }
            Err(e) => return Err(e),
        };
        let mut layout = Layout::read(&definition);
        let wanted = collection_fields();
        let mut changes = layout.changes(name, &wanted);
        let batch = match self.call(Method::GET, "/api/settings", None).await {
            Ok(settings) => Some(BatchSettings::read(&settings["batch"])),
            Err(PbError::Unavailable(e)) => return Err(PbError::Unavailable(e)),
            Err(e) => {
                tracing::info!(error = %e, "cannot read the pocketbase settings, the batch API stays unused");
                None
            }
        };
        changes.extend(batch.and_then(|b| b.change(self.settings.batch_requests)));
        let listed: Vec<String> = changes.iter().map(ToString::to_string).collect();
        let schema_allowed = layout.created_by_fleet || self.settings.allow_schema_changes;
        let settings_allowed = self.settings.allow_settings_changes;
        if !listed.is_empty() {
            tracing::info!(
                collection = %name,
                created_by_fleet = layout.created_by_fleet,
                schema_allowed,
                settings_allowed,
                "would change: {}",
                listed.join(", ")
            );
        }

        let (setting_changes, schema_changes): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(Change::is_setting);
        if !schema_changes.is_empty() && !schema_allowed {
            tracing::info!(collection = %name, "not changing the collection: set PB_ALLOW_SCHEMA_CHANGES=true to allow it");
        } else if !schema_changes.is_empty() {
            match self
                .change_collection(&path, &definition, &schema_changes)
                .await
            {
                Ok(changed) => {
                    layout = Layout::read(&changed);
                    tracing::info!(collection = %name, "pocketbase collection changed");
                }
                Err(PbError::Unavailable(e)) => return Err(PbError::Unavailable(e)),
                Err(e) => {
                    tracing::warn!(collection = %name, error = %e, "pocketbase refused the collection change, writing the fields it has");
                }
            }
        }

        let mut batch = batch;
        if let (
            Some(current),
            Some(Change::Batch {
                wanted_requests,
                wanted_timeout,
                ..
            }),
        ) = (batch, setting_changes.first())
        {
            if settings_allowed {
                let body = json!({"batch": {"enabled": true, "maxRequests": wanted_requests, "timeout": wanted_timeout}});
                match self.call(Method::PATCH, "/api/settings", Some(&body)).await {
                    Ok(settings) => {
                        batch = Some(BatchSettings::read(&settings["batch"]));
                        tracing::info!(
                            max_requests = wanted_requests,
                            "pocketbase batch API enabled"
                        );
                    }
                    Err(PbError::Unavailable(e)) => return Err(PbError::Unavailable(e)),
                    Err(e) => {
                        batch = Some(current);
                        tracing::warn!(error = %e, "pocketbase refused the settings change");
                    }
                }
            } else {
                tracing::info!("not changing the pocketbase settings: set PB_ALLOW_SETTINGS_CHANGES=true to allow it");
            }
        }
        let chunk = batch.map_or(0, |b| b.chunk(self.settings.batch_requests));
        self.batch_chunk.store(chunk, Ordering::Relaxed);

        if !layout.has("execution_id") {
            return Err(PbError::Incompatible(format!(
                "collection {name} has no execution_id field; set PB_ALLOW_SCHEMA_CHANGES=true or pick another PB_TARGET_COLLECTION"
            )));
        }
        let unwritten = layout.unwritten(&wanted);
        if !unwritten.is_empty() {
            tracing::info!(
                collection = %name,
                count = unwritten.len(),
                merge_state = layout.keeps_merge_state(),
                "collection lacks fields, not written: {}",
                unwritten.join(", ")
            );
        }
        if chunk == 0 {
            tracing::info!(collection = %name, "writing one record per request");
        } else {
            tracing::info!(collection = %name, requests = chunk, "writing through the batch API");
        }
        if let Ok(mut slot) = self.prepared.write() {
            *slot = Some(Arc::new(Prepared {
                layout,
                listed,
                unwritten,
            }));
        }
        Ok(())
    }

    /// Adds the listed fields and index to the collection's definition (PocketBase replaces the field
    /// list with the one sent, so the existing fields go along unchanged). Returns the new definition.
    async fn change_collection(
        &self,
        path: &str,
        definition: &Value,
        changes: &[Change],
    ) -> Result<Value, PbError> {
        let mut fields = definition["fields"].as_array().cloned().unwrap_or_default();
        let mut indexes = definition["indexes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for change in changes {
            match change {
                Change::AddField(field) => fields.push(field.clone()),
                Change::AddUniqueIndex(sql) => indexes.push(json!(sql)),
                Change::Batch { .. } => {}
            }
        }
        self.call(
            Method::PATCH,
            path,
            Some(&json!({"fields": fields, "indexes": indexes})),
        )
        .await
    }

    /// The records of these installs, by execution id. The chunks are read concurrently (SQLite serves
    /// reads in parallel with WAL).
    async fn lookup(
        &self,
        ids: &[&str],
        layout: &Layout,
    ) -> Result<HashMap<String, Current>, SinkError> {
        // The writer's fields the collection has, and the autodates a rebuilt state starts from.
        let mut names = vec!["id".to_string()];
        names.extend(
            collection_fields()
                .iter()
                .filter_map(|f| f["name"].as_str())
                .filter(|n| layout.has(n))
                .map(str::to_string),
        );
        let fields = names.join(",");
        let pages = futures::future::try_join_all(
            ids.chunks(LOOKUP_CHUNK)
                .map(|chunk| self.lookup_chunk(chunk, &fields, layout.keeps_merge_state())),
        )
        .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    async fn lookup_chunk(
        &self,
        chunk: &[&str],
        fields: &str,
        merge_state: bool,
    ) -> Result<Vec<(String, Current)>, SinkError> {
        let mut terms = Vec::with_capacity(chunk.len());
        for id in chunk {
            let literal = filter_literal(id).ok_or_else(|| {
                SinkError::Rejected("execution_id breaks the contract's id rule".into())
            })?;
            terms.push(format!("execution_id={literal}"));
        }
        let filter = terms.join("||");
        let path = format!(
            "/api/collections/{}/records?perPage={}&skipTotal=1&fields={fields}&filter={}",
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
            let state = if merge_state {
                serde_json::from_value::<InstallState>(item["merge_state"].clone()).ok()
            } else {
                None
            };
            found.push((
                execution_id.to_string(),
                Current {
                    id: id.to_string(),
                    record: item.clone(),
                    state,
                },
            ));
        }
        Ok(found)
    }

    /// Fences every write of this sink with the lease from now on (the writer's PocketBase sink; a sink
    /// without a fence, e.g. of a test or a tool, writes unconditionally). A second fence is ignored.
    pub fn fence_with(&self, fence: Fence) {
        let _ = self.fence.set(fence);
    }

    /// Ok when no fence is set or the lease is still this replica's.
    async fn fenced(&self) -> Result<(), SinkError> {
        match self.fence.get() {
            None => Ok(()),
            Some(fence) => fence
                .check()
                .await
                .map_err(|e| SinkError::LeaseLost(e.to_string())),
        }
    }

    async fn send_requests(&self, requests: Vec<Value>) -> Result<(), SinkError> {
        if requests.is_empty() {
            return Ok(());
        }
        let chunk_size = self.batch_chunk.load(Ordering::Relaxed);
        if chunk_size > 0 {
            for chunk in requests.chunks(chunk_size) {
                self.fenced().await?;
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
                self.fenced().await?;
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
                SinkError::Unavailable(t)
                | SinkError::Conflict(t)
                | SinkError::Rejected(t)
                | SinkError::Unclear(t)
                | SinkError::LeaseLost(t) => PbError::Unavailable(t),
            })?;
            deleted += count;
        }
        if deleted > 0 {
            tracing::info!(collection = %collection, records = deleted, cutoff = %cutoff, "retention deleted records");
        }
        Ok(PbRetention::Deleted(deleted))
    }

    /// True when this fleet created the target collection: the collection carries the writer's marker
    /// ([`PocketBaseSink::created_by_fleet`], read by [`PocketBaseSink::prepare`]). A collection found in
    /// place (the running service's) has none. Reads the definition again when `prepare` has not run.
    pub async fn created_here(&self) -> Result<bool, PbError> {
        if self.prepared().is_some() {
            return Ok(self.created_by_fleet());
        }
        let path = format!("/api/collections/{}", self.settings.collection);
        match self.call(Method::GET, &path, None).await {
            Ok(definition) => Ok(Layout::read(&definition).created_by_fleet),
            Err(PbError::Status { status: 404, .. }) => Ok(false),
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
        // Each attempt starts with the lease (and every request below checks it again).
        self.fenced().await?;
        let prepared = self
            .prepared()
            .ok_or_else(|| SinkError::Unavailable("pocketbase collection not prepared".into()))?;
        let layout = &prepared.layout;
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
        let current = self.lookup(&ids, layout).await?;
        let collection = &self.settings.collection;
        let mut requests = Vec::new();
        let mut replaced_values: BTreeMap<String, u64> = BTreeMap::new();
        let mut forged_events = 0u64;
        for (id, group) in groups {
            let prior = current.get(id);
            // A record without a usable merge_state is rebuilt from its own fields.
            let (before, rebuilt) = match prior {
                None => (None, false),
                Some(Current {
                    state: Some(state), ..
                }) => (Some(state.clone()), false),
                Some(c) => {
                    let earliest = group.iter().map(|e| e.received_at).min();
                    let fallback = earliest.unwrap_or_else(OffsetDateTime::now_utc);
                    (layout.rebuild(&c.record, fallback), true)
                }
            };
            let mut state = before.clone();
            for event in group {
                if state.as_ref().is_some_and(|s| forged(s, event)) {
                    forged_events += 1;
                }
                state = Some(merge(state, event));
            }
            let Some(state) = state else { continue };
            let (body, replaced) = layout.body(&state);
            let (request, written) = match prior {
                None => {
                    let url = format!("/api/collections/{collection}/records");
                    (json!({"method": "POST", "url": url, "body": body}), body)
                }
                Some(c) => {
                    let changed = layout.diff(&body, &c.record);
                    let write = if rebuilt {
                        let mut diff = changed.clone();
                        if !diff.is_empty() && layout.keeps_merge_state() {
                            diff.insert("merge_state".into(), json!(state));
                        }
                        diff
                    } else if before.as_ref() == Some(&state) {
                        serde_json::Map::new()
                    } else {
                        body
                    };
                    if write.is_empty() {
                        continue;
                    }
                    let url = format!("/api/collections/{collection}/records/{}", c.id);
                    (
                        json!({"method": "PATCH", "url": url, "body": write}),
                        changed,
                    )
                }
            };
            for field in replaced.into_iter().filter(|f| written.contains_key(f)) {
                *replaced_values.entry(field).or_default() += 1;
            }
            requests.push(request);
        }
        self.send_requests(requests).await?;
        if forged_events > 0 {
            ::metrics::counter!(FORGED_EVENTS, "sink" => "pocketbase").increment(forged_events);
            tracing::debug!(
                events = forged_events,
                "events of another random_id than their install's first event, not applied"
            );
        }
        for (field, count) in replaced_values {
            ::metrics::counter!(SELECT_REPLACED, "sink" => "pocketbase", "field" => field)
                .increment(count);
        }
        Ok(())
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
    fleet::percent::encode(value)
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
                SinkError::Unclear(_) => "unclear",
                SinkError::LeaseLost(_) => "lease",
            };
            assert_eq!(got, expected);
        };
        check(PbError::Unavailable("refused".into()), "retry");
        // The database failed, not the record: PocketBase says 400 with no field errors.
        check(
            PbError::Status {
                status: 400,
                body: r#"{"status":400,"message":"Failed to create record.","data":{}}"#.into(),
            },
            "unclear",
        );
        check(
            PbError::Status {
                status: 400,
                body: r#"{"status":400,"message":"Batch transaction failed.","data":{"requests":{"0":{"code":"batch_request_failed","message":"Batch request failed.","response":{"status":400,"message":"Failed to update record.","data":{}}}}}}"#.into(),
            },
            "unclear",
        );
        check(
            PbError::Status {
                status: 400,
                body: r#"{"status":400,"message":"Batch transaction failed.","data":{"requests":{"3":{"code":"batch_request_failed","message":"Batch request failed.","response":{"status":400,"message":"Failed to create record.","data":{"status":{"code":"validation_invalid_value","message":"Invalid value."}}}}}}}"#.into(),
            },
            "reject",
        );
        check(
            PbError::Status {
                status: 400,
                body: "not json".into(),
            },
            "unclear",
        );
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

    #[test]
    fn record_carries_the_newer_fields_and_the_deciding_finals_duration() {
        let accept = |body: &str| {
            schema::validate(body.as_bytes(), schema::Reception::now())
                .expect("valid")
                .event
        };
        let head = r#"{"random_id":"r1","type":"turnkey","nsapp":"turnkey-core""#;
        let installing = accept(&format!(
            r#"{head},"status":"installing","install_duration":0,"repo_slug":"a/b","has_arm":true,"arch":"ARM64"}}"#
        ));
        let ping = accept(&format!(
            r#"{head},"status":"configuring","install_duration":141}}"#
        ));
        let success = accept(&format!(
            r#"{head},"status":"success","exit_code":0,"install_duration":388}}"#
        ));
        let bare = accept(&format!(r#"{head},"status":"success","exit_code":0}}"#));
        let check = |events: &[&Event], duration: u32| {
            let mut state = None;
            for e in events {
                state = Some(merge(state, e));
            }
            let body = record(&state.expect("state"));
            assert_eq!(body["install_duration"], duration, "{body}");
            assert_eq!(body["type"], "turnkey");
            assert_eq!(
                (&body["repo_slug"], &body["has_arm"], &body["arch"]),
                (&json!("a/b"), &json!(true), &json!("arm64"))
            );
        };
        check(&[&installing, &ping, &success], 388);
        check(&[&success, &ping, &installing], 388);
        check(&[&installing, &ping, &bare], 141);
        check(&[&bare, &installing, &ping], 141);
    }
}
