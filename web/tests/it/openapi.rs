//! The OpenAPI document (`/api/openapi.json`) holds every route to its word. The document is checked as an
//! OpenAPI 3.1 document (version, operations with described responses, declared path parameters, every
//! `$ref` resolving), its routes must be exactly the ones the router serves (read from the `.route(…)`
//! calls of `src/`, so a new route without a description fails here), and every GET of the document is
//! called on the seeded stack: the status must be one it documents, the content type the documented one,
//! and a JSON answer must match its schema. The parameters of each call are held to the documented ones
//! too: every one documented, and a 400 exactly when a value breaks its parameter's schema. The schemas
//! are checked closed: an object may carry only the keys its schema (with its `allOf` siblings) names, and
//! must carry the `required` ones, so a key the code adds or drops fails too.
//!
//! The validator is a small one for the subset of JSON Schema 2020-12 the document uses (`$ref`, `allOf`,
//! `oneOf`, `type` (also as a list, for `null`), `enum`, `properties`, `required`, `items`, `prefixItems`,
//! `minItems`, `maxItems`, `minimum`, `maximum`, `minLength`, `maxLength`, `pattern`; `format` and the
//! annotations are not checked): a keyword it does not know fails the test rather than pass unchecked.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream;
use regex::Regex;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use schema::alert::{AlertEvent, Kind, Rule, Scope as AlertScope};
use schema::stats::{ExitCodeCount, NameCount, SignatureCount};
use serde_json::{json, Value};

use crate::harness::{accept, seed_events, seed_installs, Stack, Web, HOSTILE};

const PASSWORD: &str = "correct horse battery staple, twice";

/// Keywords the validator checks.
const CHECKED: &[&str] = &[
    "$ref",
    "allOf",
    "oneOf",
    "type",
    "enum",
    "properties",
    "required",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
];
/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["description", "format", "default", "title", "example"];

/// A validator for the subset of JSON Schema the document uses, over the document's components.
struct Validator<'a> {
    doc: &'a Value,
    /// Component schema name → how many values it was checked against.
    used: BTreeMap<String, usize>,
}

impl<'a> Validator<'a> {
    fn new(doc: &'a Value) -> Validator<'a> {
        Validator {
            doc,
            used: BTreeMap::new(),
        }
    }

    fn resolve(&self, reference: &str) -> &'a Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference}: only local references"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} does not resolve"))
    }

    /// The schema behind a `$ref` (once), else the schema.
    fn target(&self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => self.resolve(r),
            None => schema,
        }
    }

    /// The keys an object of `schema` may carry: its properties and those of its `allOf` members.
    fn allowed(&self, schema: &'a Value, out: &mut BTreeSet<String>) {
        let schema = self.target(schema);
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            out.extend(props.keys().cloned());
        }
        for member in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.allowed(member, out);
        }
    }

    /// Checks `value` against `schema`; `closed` when no enclosing `allOf` supplies more keys.
    fn check(
        &mut self,
        schema: &'a Value,
        value: &Value,
        at: &str,
        closed: bool,
        errors: &mut Vec<String>,
    ) {
        let map = schema
            .as_object()
            .unwrap_or_else(|| panic!("{at}: a schema must be an object: {schema}"));
        for key in map.keys() {
            assert!(
                CHECKED.contains(&key.as_str()) || ANNOTATIONS.contains(&key.as_str()),
                "{at}: the validator does not check the keyword {key:?}"
            );
        }
        if let Some(r) = map.get("$ref").and_then(Value::as_str) {
            *self
                .used
                .entry(r.rsplit('/').next().unwrap_or(r).to_string())
                .or_default() += 1;
            let target = self.resolve(r);
            self.check(target, value, at, closed, errors);
        }
        if let Some(members) = map.get("allOf").and_then(Value::as_array) {
            let mut keys = BTreeSet::new();
            self.allowed(schema, &mut keys);
            for member in members {
                self.check(member, value, at, false, errors);
            }
            if let (true, Some(object)) = (closed, value.as_object()) {
                for key in object.keys().filter(|k| !keys.contains(*k)) {
                    errors.push(format!("{at}: key {key:?} is not in the schema"));
                }
            }
        }
        if let Some(members) = map.get("oneOf").and_then(Value::as_array) {
            let matching = members
                .iter()
                .filter(|m| {
                    let mut inner = Vec::new();
                    self.check(m, value, at, closed, &mut inner);
                    inner.is_empty()
                })
                .count();
            if matching != 1 {
                errors.push(format!("{at}: {matching} of oneOf match {value}"));
            }
        }
        if let Some(ty) = map.get("type") {
            let types: Vec<&str> = match ty {
                Value::String(t) => vec![t.as_str()],
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                other => panic!("{at}: type {other}"),
            };
            if !types.iter().any(|t| is_type(value, t)) {
                errors.push(format!("{at}: {value} is not {types:?}"));
                return;
            }
        }
        if let Some(choices) = map.get("enum").and_then(Value::as_array) {
            if !choices.contains(value) {
                errors.push(format!("{at}: {value} is not one of {choices:?}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = map.get("minimum").and_then(Value::as_f64) {
                if n < min {
                    errors.push(format!("{at}: {n} < minimum {min}"));
                }
            }
            if let Some(max) = map.get("maximum").and_then(Value::as_f64) {
                if n > max {
                    errors.push(format!("{at}: {n} > maximum {max}"));
                }
            }
        }
        if let Some(text) = value.as_str() {
            let chars = text.chars().count() as u64;
            if map
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| chars < m)
            {
                errors.push(format!("{at}: {text:?} is too short"));
            }
            if map
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| chars > m)
            {
                errors.push(format!("{at}: {text:?} is too long"));
            }
            if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
                let re = Regex::new(pattern).unwrap_or_else(|e| panic!("{at}: {pattern}: {e}"));
                if !re.is_match(text) {
                    errors.push(format!("{at}: {text:?} does not match {pattern}"));
                }
            }
        }
        if let Some(object) = value.as_object() {
            let props = map.get("properties").and_then(Value::as_object);
            for key in map
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = key.as_str().expect("required names");
                if !object.contains_key(key) {
                    errors.push(format!("{at}: required key {key:?} is missing"));
                }
            }
            if let Some(props) = props {
                for (key, item) in object {
                    match props.get(key) {
                        Some(schema) => {
                            self.check(schema, item, &format!("{at}.{key}"), true, errors)
                        }
                        None if closed && !map.contains_key("allOf") => {
                            errors.push(format!("{at}: key {key:?} is not in the schema"))
                        }
                        None => {}
                    }
                }
            }
        }
        if let Some(list) = value.as_array() {
            let len = list.len() as u64;
            if map
                .get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| len < m)
            {
                errors.push(format!("{at}: fewer than minItems"));
            }
            if map
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| len > m)
            {
                errors.push(format!("{at}: more than maxItems"));
            }
            let prefix = map.get("prefixItems").and_then(Value::as_array);
            for (i, item) in list.iter().enumerate() {
                let schema = prefix.and_then(|p| p.get(i)).or_else(|| map.get("items"));
                if let Some(schema) = schema {
                    self.check(schema, item, &format!("{at}[{i}]"), true, errors);
                }
            }
        }
    }
}

fn is_type(value: &Value, ty: &str) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

/// Every `$ref` in `value`, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push((
                        at.to_string(),
                        v.as_str().expect("$ref is text").to_string(),
                    ));
                } else {
                    refs(v, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The document's structure: what every OpenAPI 3.1 reader relies on.
fn check_structure(doc: &Value) {
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI 3.1: {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut all = Vec::new();
    refs(doc, "#", &mut all);
    assert!(
        all.len() > 100,
        "the document uses components: {} $refs",
        all.len()
    );
    for (at, r) in &all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {r} is not local"));
        assert!(doc.pointer(pointer).is_some(), "{at}: {r} does not resolve");
    }
    let paths = doc["paths"].as_object().expect("paths");
    let template = Regex::new(r"\{([^}]+)\}").expect("regex");
    for (path, item) in paths {
        let item = item.as_object().expect("path item");
        let ops: Vec<_> = item
            .iter()
            .filter(|(m, _)| METHODS.contains(&m.as_str()))
            .collect();
        assert!(!ops.is_empty(), "{path}: no operation");
        let names: BTreeSet<String> = template
            .captures_iter(path)
            .map(|c| c[1].to_string())
            .collect();
        for (method, op) in ops {
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}"));
            assert!(!responses.is_empty(), "{method} {path}: no responses");
            for (code, response) in responses {
                let response = resolve(doc, response);
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {code}: no description"
                );
                for (media, body) in response["content"].as_object().into_iter().flatten() {
                    assert!(
                        body["schema"].is_object(),
                        "{method} {path} {code} {media}: no schema"
                    );
                }
            }
            let mut declared = BTreeSet::new();
            for param in op["parameters"].as_array().into_iter().flatten() {
                let param = resolve(doc, param);
                let name = param["name"].as_str().expect("parameter name");
                let place = param["in"].as_str().expect("parameter in");
                assert!(
                    ["query", "path", "header", "cookie"].contains(&place),
                    "{method} {path}: {name} in {place}"
                );
                assert!(
                    param["schema"].is_object(),
                    "{method} {path}: {name} has no schema"
                );
                if place == "path" {
                    assert_eq!(
                        param["required"], true,
                        "{method} {path}: path parameter {name}"
                    );
                    declared.insert(name.to_string());
                }
            }
            assert_eq!(declared, names, "{method} {path}: path parameters");
        }
    }
}

fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(r) => doc.pointer(&r[1..]).unwrap_or_else(|| panic!("{r}")),
        None => value,
    }
}

/// The routes the router serves, as `METHOD path`, read from the `.route(…)` calls in `src/` (axum's
/// `{*rest}` is OpenAPI's `{rest}`).
fn served_routes() -> BTreeSet<String> {
    let route =
        Regex::new(r#"\.route\(\s*"([^"]+)",\s*(get|post|put|delete|patch)\("#).expect("regex");
    let mut out = BTreeSet::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                // fleet's readiness probe, merged into the public router.
                if text.contains("ops(&state).readiness()") {
                    out.insert("GET /readyz".to_string());
                }
                for c in route.captures_iter(&text) {
                    out.insert(format!(
                        "{} {}",
                        c[2].to_uppercase(),
                        c[1].replace("{*", "{")
                    ));
                }
            }
        }
    }
    out
}

fn documented_routes(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            if METHODS.contains(&method.as_str()) {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out
}

/// The documented answer of `method path` with `status`: its media type and schema.
fn documented<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    status: StatusCode,
) -> (&'a str, &'a Value) {
    let op = &doc["paths"][path][method];
    let response = op["responses"]
        .get(status.as_str())
        .unwrap_or_else(|| panic!("{method} {path}: status {status} is not documented"));
    let response = resolve(doc, response);
    let (media, body) = response["content"]
        .as_object()
        .and_then(|c| c.iter().next())
        .unwrap_or_else(|| panic!("{method} {path} {status}: no content"));
    (media.as_str(), &body["schema"])
}

/// Checks one answer against the document (content type, body, documented headers); returns the errors.
fn check_answer(
    validator: &mut Validator<'_>,
    method: &str,
    template: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> Vec<String> {
    let doc = validator.doc;
    let (media, schema) = documented(doc, method, template, status);
    let mut errors = Vec::new();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if media != "*/*" && media != essence {
        errors.push(format!("content type {content_type}, documented {media}"));
    }
    if media == "application/json" {
        let value: Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{template}: {e}: {body}"));
        validator.check(schema, &value, "$", true, &mut errors);
    } else if media.starts_with("text/") {
        let text = Value::String(body.to_string());
        validator.check(schema, &text, "$", true, &mut errors);
    }
    let response = resolve(
        doc,
        &doc["paths"][template][method]["responses"][status.as_str()],
    );
    for (name, header) in response["headers"].as_object().into_iter().flatten() {
        let schema = &resolve(doc, header)["schema"];
        match headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
            None => errors.push(format!("header {name} is missing")),
            Some(text) => {
                let value = match (schema["type"].as_str(), text.parse::<i64>()) {
                    (Some("integer"), Ok(n)) => Value::from(n),
                    _ => Value::String(text.to_string()),
                };
                validator.check(schema, &value, name, true, &mut errors);
            }
        }
    }
    errors
}

/// Installs of an add-on loaded from a repo slug, half of them failed, over the last day: enough for
/// the 7-day failure rankings (15 installs), the add-on and slug lists, beside the harness's seeds.
pub const ADDONS: usize = 16;

pub fn events() -> Vec<schema::Accepted> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut events = seed_events();
    for n in 0..ADDONS {
        let id = format!("addon-{n:03}");
        let start = now - 3600 - n as i64 * 60;
        let installing = json!({
            "random_id": id, "execution_id": id, "type": "addon", "nsapp": "openapi-addon",
            "status": "installing", "os_type": "debian", "os_version": "12", "pve_version": "9.0.3",
            "repo_source": "ProxmoxVE", "repo_slug": "community-scripts/ProxmoxVE", "method": "default"
        });
        events.push(accept(&installing, start, 0));
        let (status, code) = if n % 2 == 0 {
            ("success", 0)
        } else {
            ("failed", 100)
        };
        let last = json!({
            "random_id": id, "execution_id": id, "type": "addon", "nsapp": "openapi-addon",
            "status": status, "exit_code": code, "install_duration": 30,
            "error": if code == 0 { "" } else { "E: Unable to locate package foo" }
        });
        events.push(accept(&last, start + 30, 1));
    }
    events
}

/// Checks the parameters of `url` against the documented ones of `GET template`: every query parameter
/// must be documented, and each value (path and query) is checked against its parameter's schema (an
/// integer parameter's text as a number). Returns what breaks the documented parameters.
fn check_parameters(validator: &mut Validator<'_>, template: &str, url: &str) -> Vec<String> {
    let doc = validator.doc;
    let params: Vec<&Value> = doc["paths"][template]["get"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| resolve(doc, p))
        .collect();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut given: Vec<(&str, &str, String)> = Vec::new();
    for (segment, value) in template.split('/').zip(path.split('/')) {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            given.push(("path", name, value.replace("%20", " ")));
        }
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        given.push(("query", name, value.to_string()));
    }
    let mut errors = Vec::new();
    for (place, name, text) in given {
        let Some(param) = params
            .iter()
            .find(|p| p["in"] == place && p["name"] == name)
        else {
            errors.push(format!("{place} parameter {name} is not documented"));
            continue;
        };
        let schema = &param["schema"];
        let value = match (schema["type"].as_str(), text.parse::<i64>()) {
            (Some("integer"), Ok(n)) => Value::from(n),
            _ => Value::String(text),
        };
        validator.check(schema, &value, name, true, &mut errors);
    }
    errors
}

/// An alert on the alerts stream, so that `/api/alerts` lists one with every list filled.
async fn publish_alert(stack: &Stack) {
    let client = fleet::nats::connect(&stack.nats.url(), "test-alert")
        .await
        .expect("connect");
    let js = jetstream::new(client);
    fleet::nats::ensure_stream(&js, &schema::names::alerts_stream(1))
        .await
        .expect("alerts stream");
    let event = AlertEvent {
        v: 1,
        alert_id: uuid::Uuid::now_v7(),
        kind: Kind::Alert,
        rule: Rule::NewSignature,
        scope: AlertScope::Signature,
        subject: "apt: unable to locate package".into(),
        at: time::OffsetDateTime::now_utc(),
        window: "24h".into(),
        threshold: None,
        failure_rate: Some(0.5),
        started: 40,
        success: 20,
        failed: 20,
        aborted: 0,
        unknown: 0,
        apps: vec![NameCount {
            name: HOSTILE.into(),
            count: 3,
        }],
        top_exit_codes: vec![ExitCodeCount {
            code: 100,
            category: schema::category::Category::Apt,
            description: "apt".into(),
            count: 3,
        }],
        top_signatures: vec![SignatureCount {
            signature: "apt: unable to locate package".into(),
            count: 3,
        }],
        dashboard_url: "http://127.0.0.1:8081/dashboard".into(),
    };
    js.publish(
        schema::alert::alert_subject(&event),
        serde_json::to_vec(&event).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
}

/// The GETs to make: (documented path, URL). Every GET of the document needs at least one.
pub fn calls(id: &str) -> Vec<(&'static str, String)> {
    let app = "/api/v2/apps/docker?days=365&repo=all";
    let hostile = format!("/api/apps/{}?days=90", HOSTILE.replace(' ', "%20"));
    let mut out: Vec<(&'static str, String)> = vec![
        ("/api/dashboard", "/api/dashboard".into()),
        ("/api/dashboard", "/api/dashboard?days=0".into()),
        ("/api/dashboard", "/api/dashboard?days=7&repo=all".into()),
        (
            "/api/dashboard",
            "/api/dashboard?days=7&slug=community-scripts/ProxmoxVE".into(),
        ),
        (
            "/api/dashboard",
            "/api/dashboard?days=365&repo=ProxmoxVED".into(),
        ),
        ("/api/errors", "/api/errors".into()),
        ("/api/errors", "/api/errors?days=0&repo=all".into()),
        ("/api/errors", "/api/errors?days=7&repo=all".into()),
        ("/api/records", "/api/records".into()),
        (
            "/api/records",
            "/api/records?days=0&repo=all&limit=5&sort=-nsapp".into(),
        ),
        (
            "/api/records",
            "/api/records?days=365&repo=all&status=failed&type=lxc".into(),
        ),
        ("/api/scripts", "/api/scripts".into()),
        ("/api/scripts", "/api/scripts?days=0&repo=all".into()),
        ("/api/scripts", "/api/scripts?days=7&repo=ProxmoxVED".into()),
        ("/api/v2/dashboard", "/api/v2/dashboard".into()),
        (
            "/api/v2/dashboard",
            "/api/v2/dashboard?days=365&repo=all".into(),
        ),
        (
            "/api/v2/dashboard",
            "/api/v2/dashboard?days=today&repo=ProxmoxVE".into(),
        ),
        ("/api/v2/dashboard", "/api/v2/dashboard?days=7".into()),
        (
            "/api/v2/dashboard",
            "/api/v2/dashboard?slug=community-scripts/ProxmoxVE".into(),
        ),
        ("/api/v2/errors", "/api/v2/errors?days=365&repo=all".into()),
        ("/api/v2/errors", "/api/v2/errors?days=7".into()),
        ("/api/v2/apps/{nsapp}", app.into()),
        (
            "/api/v2/apps/{nsapp}",
            "/api/v2/apps/nothing-installed-this".into(),
        ),
        ("/api/apps/{nsapp}", hostile),
        (
            "/api/v2/records",
            "/api/v2/records?days=365&repo=all".into(),
        ),
        (
            "/api/v2/records",
            "/api/v2/records?days=90&status=failed&sort=exit_code&order=asc&limit=3&page=2".into(),
        ),
        (
            "/api/v2/records.csv",
            "/api/v2/records.csv?days=365&repo=all".into(),
        ),
        (
            "/api/records.csv",
            "/api/records.csv?days=90&app=docker".into(),
        ),
        ("/api/v2/records/{id}", format!("/api/v2/records/{id}")),
        ("/api/records/{id}", format!("/api/records/{id}")),
        ("/api/figures", "/api/figures".into()),
        ("/api/figures", "/api/figures?days=365&repo=all".into()),
        ("/api/exit-codes", "/api/exit-codes".into()),
        ("/api/alerts", "/api/alerts".into()),
        ("/api/live", "/api/live?repo=all".into()),
        ("/api/openapi.json", "/api/openapi.json".into()),
        // No aggregator runs here: the documented 503.
        ("/api/cleanup/status", "/api/cleanup/status".into()),
        ("/health", "/health".into()),
        ("/healthz", "/healthz".into()),
        ("/livez", "/livez".into()),
        ("/readyz", "/readyz".into()),
        ("/static/{path}", "/static/app.css".into()),
        // Errors, as documented.
        ("/api/v2/dashboard", "/api/v2/dashboard?days=8".into()),
        ("/api/v2/records", "/api/v2/records?limit=501".into()),
        (
            "/api/v2/records/{id}",
            "/api/v2/records/no-such-install".into(),
        ),
        ("/api/v2/records/{id}", "/api/v2/records/-bad".into()),
        ("/api/figures", "/api/figures?repo=nowhere".into()),
        ("/static/{path}", "/static/nothing.css".into()),
    ];
    for page in [
        "/",
        "/dashboard",
        "/dashboard/errors",
        "/dashboard/apps/{nsapp}",
        "/dashboard/installs",
        "/dashboard/installs/{id}",
        "/dashboard/alerts",
        "/dashboard/exit-codes",
        "/script-analysis",
        "/error-analysis",
    ] {
        let url = page.replace("{nsapp}", "docker").replace("{id}", id);
        out.push((page, url));
    }
    out.push(("/dashboard/installs", "/dashboard/installs?days=8".into()));
    out
}

async fn get(web: &Web, url: &str) -> (StatusCode, HeaderMap, String) {
    let resp = web.get(url).await;
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.expect("body"))
}

#[tokio::test]
async fn every_route_is_documented_and_answers_as_documented() {
    let stack = Stack::with(events(), seed_installs() + ADDONS as u64).await;
    publish_alert(&stack).await;
    let web = stack
        .web(|c| c.admin_password = web::config::Secret::new(PASSWORD))
        .await;

    let doc = web.json("/api/openapi.json").await;
    check_structure(&doc);

    let served = served_routes();
    assert!(
        served.len() > 30,
        "the router's routes were found: {served:?}"
    );
    let documented = documented_routes(&doc);
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not served"
    );
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served but not documented"
    );

    let listing = web.json("/api/v2/records?days=365&repo=all").await;
    let id = listing["records"][0]["execution_id"]
        .as_str()
        .expect("a record id")
        .to_string();
    let calls = calls(&id);
    let called: BTreeSet<&str> = calls.iter().map(|(p, _)| *p).collect();
    for route in documented.iter().filter_map(|r| r.strip_prefix("GET ")) {
        assert!(
            called.contains(route),
            "GET {route} is documented but not called here"
        );
    }

    let mut validator = Validator::new(&doc);
    let mut failures = Vec::new();
    let mut statuses = BTreeMap::<&str, BTreeSet<u16>>::new();
    for (template, url) in &calls {
        let (status, headers, body) = get(&web, url).await;
        statuses
            .entry(*template)
            .or_default()
            .insert(status.as_u16());
        // The documented parameters predict the refusals: valid ones answer, a 400 breaks one.
        let bad_params = check_parameters(&mut validator, template, url);
        if status == StatusCode::BAD_REQUEST && bad_params.is_empty() {
            failures.push(format!(
                "GET {url}: 400, yet its parameters are documented as valid"
            ));
        }
        if status != StatusCode::BAD_REQUEST && !bad_params.is_empty() {
            failures.push(format!("GET {url} ({status}): {bad_params:?}"));
        }
        for e in check_answer(&mut validator, "get", template, status, &headers, &body) {
            failures.push(format!("GET {url} ({status}): {e}"));
        }
    }
    // The admin actions without a password: the documented 401.
    for path in [
        "/api/alerts/test",
        "/api/cleanup/run",
        "/api/github/create-issue",
    ] {
        let resp = web
            .http
            .post(web.url(path))
            .json(&json!({}))
            .send()
            .await
            .expect("post");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.text().await.expect("body");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "POST {path}: {body}");
        for e in check_answer(&mut validator, "post", path, status, &headers, &body) {
            failures.push(format!("POST {path} ({status}): {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "answers that break the document:\n{}",
        failures.join("\n")
    );

    // The seeded answers were 200 where they should be, so the schemas of the bodies were exercised.
    for (template, url) in &calls {
        let ok = statuses[template].contains(&200);
        assert!(ok || template.contains("cleanup"), "{url}: never 200");
    }
    let unused: Vec<&str> = doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
        .map(String::as_str)
        .filter(|name| !validator.used.contains_key(*name))
        .collect();
    // Documented but not seen here: the admin replies (they need the alerter and aggregator; admin.rs
    // checks those answers) and the admin request body.
    let unseen = [
        "AlertTest",
        "CleanupRun",
        "CleanupStatus",
        "IssueCreated",
        "AdminRequest",
    ];
    assert!(
        unused.iter().all(|n| unseen.contains(n)),
        "component schemas no answer here was checked against: {unused:?}"
    );
    web.shutdown().await;
}
