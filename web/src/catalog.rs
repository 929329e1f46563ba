//! The optional script catalogue (`SCRIPT_CATALOG_URL`): every script the project publishes, with its type
//! and creation date, so that `/api/scripts` and the script analysis list scripts nobody installed yet
//! (with zeros) and count a script's age from its creation instead of its first install. The source is
//! either a PocketBase (the records of collection `script_scripts`, read page by page through PocketBase's
//! list API) or a JSON file (a path, or an `http(s)` URL ending in `.json`) holding an array of
//! `{slug, type, script_created}`. It is loaded at start and refreshed every `SCRIPT_CATALOG_REFRESH_SECS`;
//! a failed load is logged (the source without credentials or query) and the last good copy is kept.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;

/// The PocketBase collection of the catalogue.
pub const COLLECTION: &str = "script_scripts";
/// Records per page of PocketBase's list API (its maximum is 1000).
const PER_PAGE: u32 = 500;
/// Most pages read (500,000 scripts): a bound, not an expectation.
const MAX_PAGES: u32 = 1000;
/// Deadline of one request to the source.
const TIMEOUT: Duration = Duration::from_secs(15);

/// One script of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogScript {
    /// The script's slug, lower-cased; it is the `nsapp` its installs report.
    pub slug: String,
    /// Its type as the installs report it (`ct` becomes `lxc`).
    pub kind: String,
    /// When the script was created (Unix seconds), when known.
    pub created: Option<i64>,
}

/// Why the catalogue could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the file: {0}")]
    File(#[from] std::io::Error),
    /// The request failed or answered an error status (the URL is never part of the text).
    #[error("request: {0}")]
    Http(String),
    #[error("not a catalogue: {0}")]
    Parse(String),
}

/// Where the catalogue comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The list API of a PocketBase collection: `…/api/collections/<name>/records`.
    PocketBase(String),
    /// A JSON file served over HTTP.
    Url(String),
    /// A JSON file on disk.
    File(PathBuf),
}

impl Source {
    /// An `http(s)` URL whose path ends in `.json` is a JSON file; any other `http(s)` URL is a PocketBase:
    /// its base URL (the collection `script_scripts` is read) or the URL of a collection
    /// (`…/api/collections/<name>[/records]`). Anything else is a path (`file://` optional).
    pub fn parse(text: &str) -> Source {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Source::File(PathBuf::from(text.strip_prefix("file://").unwrap_or(text)));
        }
        let path = text.split(['?', '#']).next().unwrap_or(text);
        if path.to_ascii_lowercase().ends_with(".json") {
            return Source::Url(text.to_string());
        }
        let path = path.trim_end_matches('/');
        if path.contains("/api/collections/") {
            if path.ends_with("/records") {
                return Source::PocketBase(path.to_string());
            }
            return Source::PocketBase(format!("{path}/records"));
        }
        Source::PocketBase(format!("{path}/api/collections/{COLLECTION}/records"))
    }

    /// The source as it may be logged: no user, password or query.
    pub fn masked(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::PocketBase(url) | Source::Url(url) => mask_url(url),
        }
    }
}

/// `scheme://host/path` of a URL: user info, query and fragment dropped.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// One entry as stored: PocketBase records carry more fields, which are ignored.
#[derive(Debug, Deserialize)]
struct RawScript {
    #[serde(default)]
    slug: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    script_created: serde_json::Value,
}

/// One page of PocketBase's list API.
#[derive(Debug, Deserialize)]
struct ListPage {
    #[serde(default)]
    items: Vec<RawScript>,
    #[serde(default, rename = "totalPages")]
    total_pages: i64,
}

/// A creation date as PocketBase (`2024-05-01 12:00:00.000Z`), RFC 3339, a date (`2024-05-01`) or Unix
/// seconds give it; `None` when empty or unreadable.
pub fn parse_created(value: &serde_json::Value) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let text = value.as_str()?.trim();
    if text.is_empty() {
        return None;
    }
    let rfc = time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(&text.replacen(' ', "T", 1), &rfc) {
        return Some(t.unix_timestamp());
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text.get(..10)?, &date)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

fn script(raw: RawScript) -> Option<CatalogScript> {
    let slug = raw.slug.trim().to_lowercase();
    if slug.is_empty() {
        return None;
    }
    let kind = match raw.kind.trim().to_ascii_lowercase().as_str() {
        "ct" | "" => "lxc".to_string(),
        other => other.to_string(),
    };
    Some(CatalogScript {
        slug,
        kind,
        created: parse_created(&raw.script_created),
    })
}

/// The scripts of a JSON array, each slug once (the first wins), sorted by slug.
pub fn parse_file(bytes: &[u8]) -> Result<Vec<CatalogScript>, CatalogError> {
    let raw: Vec<RawScript> =
        serde_json::from_slice(bytes).map_err(|e| CatalogError::Parse(e.to_string()))?;
    Ok(dedup(raw.into_iter().filter_map(script).collect()))
}

fn dedup(mut scripts: Vec<CatalogScript>) -> Vec<CatalogScript> {
    // Stable sort: of several entries with one slug, the first listed stays.
    scripts.sort_by(|a, b| a.slug.cmp(&b.slug));
    scripts.dedup_by(|later, first| later.slug == first.slug);
    scripts
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, CatalogError> {
    let answer = http
        .get(url)
        .send()
        .await
        .map_err(|e| CatalogError::Http(e.without_url().to_string()))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(CatalogError::Http(format!("status {status}")));
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| CatalogError::Http(e.without_url().to_string()))?;
    Ok(bytes.to_vec())
}

/// Reads the whole catalogue from `source`.
pub async fn load(
    http: &reqwest::Client,
    source: &Source,
) -> Result<Vec<CatalogScript>, CatalogError> {
    match source {
        Source::File(path) => parse_file(&tokio::fs::read(path).await?),
        Source::Url(url) => parse_file(&get(http, url).await?),
        Source::PocketBase(records) => {
            let mut out = Vec::new();
            let mut page = 1;
            loop {
                let url = format!(
                    "{records}?page={page}&perPage={PER_PAGE}&fields=slug,type,script_created"
                );
                let bytes = get(http, &url).await?;
                let list: ListPage = serde_json::from_slice(&bytes)
                    .map_err(|e| CatalogError::Parse(e.to_string()))?;
                let empty = list.items.is_empty();
                out.extend(list.items.into_iter().filter_map(script));
                if empty || i64::from(page) >= list.total_pages || page >= MAX_PAGES {
                    break;
                }
                page += 1;
            }
            Ok(dedup(out))
        }
    }
}

/// The catalogue the web holds: the last good copy, and how to read it again.
pub struct Catalog {
    source: Option<Source>,
    http: reqwest::Client,
    current: RwLock<Option<Arc<Vec<CatalogScript>>>>,
}

impl Catalog {
    /// A catalogue read from `url` (`None`: no catalogue; nothing is ever loaded).
    pub fn new(url: Option<&str>) -> Catalog {
        Catalog {
            source: url.filter(|u| !u.trim().is_empty()).map(Source::parse),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
            current: RwLock::new(None),
        }
    }

    pub fn configured(&self) -> bool {
        self.source.is_some()
    }

    /// The last good copy, if any was loaded.
    pub fn current(&self) -> Option<Arc<Vec<CatalogScript>>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Loads the catalogue again; on failure the last good copy stays and the failure is logged once,
    /// here. Returns the number of scripts loaded.
    pub async fn refresh(&self) -> Option<usize> {
        let source = self.source.as_ref()?;
        match load(&self.http, source).await {
            Ok(scripts) => {
                ::metrics::counter!(crate::metrics::CATALOG_LOADS, "result" => "ok").increment(1);
                let n = scripts.len();
                if let Ok(mut current) = self.current.write() {
                    *current = Some(Arc::new(scripts));
                }
                tracing::info!(source = %source.masked(), scripts = n, "script catalogue loaded");
                Some(n)
            }
            Err(e) => {
                ::metrics::counter!(crate::metrics::CATALOG_LOADS, "result" => "error")
                    .increment(1);
                tracing::warn!(source = %source.masked(), error = %e,
                    kept = self.current().map_or(0, |c| c.len()), "script catalogue not loaded; keeping the last copy");
                None
            }
        }
    }

    /// Refreshes the catalogue every `every`, forever (the caller aborts it at shutdown).
    pub async fn keep_fresh(self: Arc<Self>, every: Duration) {
        if !self.configured() {
            return;
        }
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Source) {
        assert_eq!(Source::parse(text), expected, "{text}");
    }

    #[test]
    fn sources_are_told_apart() {
        check(
            "https://db.example.org",
            Source::PocketBase(
                "https://db.example.org/api/collections/script_scripts/records".into(),
            ),
        );
        check(
            "http://127.0.0.1:8090/",
            Source::PocketBase(
                "http://127.0.0.1:8090/api/collections/script_scripts/records".into(),
            ),
        );
        check(
            "http://pb/api/collections/my_scripts",
            Source::PocketBase("http://pb/api/collections/my_scripts/records".into()),
        );
        check(
            "http://pb/api/collections/my_scripts/records/",
            Source::PocketBase("http://pb/api/collections/my_scripts/records".into()),
        );
        check(
            "https://example.org/scripts.JSON?x=1",
            Source::Url("https://example.org/scripts.JSON?x=1".into()),
        );
        check(
            "/etc/scripts.json",
            Source::File("/etc/scripts.json".into()),
        );
        check("file:///a/b.json", Source::File("/a/b.json".into()));
    }

    #[test]
    fn logged_sources_carry_no_secret() {
        assert_eq!(
            mask_url("https://user:pw@db.example.org:8090/api/x?token=s3cret#f"),
            "https://db.example.org:8090/api/x"
        );
        assert_eq!(mask_url("http://host"), "http://host");
        let masked = Source::parse("https://u:p@h/s.json?key=k").masked();
        assert_eq!(masked, "https://h/s.json");
    }

    #[test]
    fn creation_dates_are_read_in_every_form() {
        use serde_json::json;
        let day = 1_714_521_600; // 2024-05-01
        assert_eq!(
            parse_created(&json!("2024-05-01 12:00:00.000Z")),
            Some(day + 43_200)
        );
        assert_eq!(parse_created(&json!("2024-05-01T00:00:00Z")), Some(day));
        assert_eq!(parse_created(&json!("2024-05-01")), Some(day));
        assert_eq!(parse_created(&json!(day)), Some(day));
        assert_eq!(parse_created(&json!("")), None);
        assert_eq!(parse_created(&json!("soon")), None);
        assert_eq!(parse_created(&json!(null)), None);
    }

    #[test]
    fn files_become_scripts_once_each() {
        let text = br#"[{"slug":"Docker","type":"ct","script_created":"2024-05-01"},
            {"slug":"docker","type":"vm"},{"slug":"","type":"ct"},
            {"slug":"haos","type":"vm","script_created":"","extra":1}]"#;
        let scripts = parse_file(text).expect("parses");
        assert_eq!(
            scripts,
            vec![
                CatalogScript {
                    slug: "docker".into(),
                    kind: "lxc".into(),
                    created: Some(1_714_521_600)
                },
                CatalogScript {
                    slug: "haos".into(),
                    kind: "vm".into(),
                    created: None
                },
            ]
        );
        assert!(parse_file(b"{}").is_err());
    }
}
