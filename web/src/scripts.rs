//! `/api/scripts` in the running service's shape, and the script analysis page (`/script-analysis`)
//! rendered from the same answer: per script its installs in the period by final status, success rate,
//! installs per day and age, plus the newest installs. The parameters are the running service's and as
//! lenient: `days` 30 by default, 0 = all time, negative → 1, above 365 → 365, unreadable → 30; `repo`
//! `ProxmoxVE` by default (`all`: every repo; unknown: the default); `slug` filters on `repo_slug`. Nothing
//! here answers 400. With a script catalogue ([`crate::catalog`]) scripts of the main repo that nobody
//! installed appear with zeros, and a script's age counts from its creation.
//!
//! One pass over `installs_final` (every install of the repo filter, to know each script's first install)
//! counts the period's installs per script and status; a second reads the newest installs. Aborted
//! installs are the ones the edge classified so (exit 129/130 or an interrupt phrase, `schema::validate`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::SwrCache;
use crate::catalog::{Catalog, CatalogScript};
use crate::db::{BindFilter, Db, DbError};
use crate::model::percent;
use crate::params::{Params, Repo};
use crate::Rendered;

/// The default period, days.
pub const DEFAULT_DAYS: u32 = 30;
/// The longest period, days.
pub const MAX_DAYS: u32 = 365;
/// How many newest installs `recent_scripts` lists.
pub const RECENT_SCRIPTS: u64 = 20;
/// The longest slug filter kept (a valid one has at most 128 bytes; a longer one matches nothing).
const MAX_SLUG_CHARS: usize = 256;

/// The parameters of `/api/scripts` and `/script-analysis`: the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScriptsQuery {
    /// 0: all time; else today and the `days - 1` calendar days before it.
    pub days: u32,
    pub repo: Repo,
    /// Empty: every slug.
    pub slug: String,
}

impl Default for ScriptsQuery {
    fn default() -> ScriptsQuery {
        ScriptsQuery {
            days: DEFAULT_DAYS,
            repo: Repo(Some(schema::RepoSource::ProxmoxVE)),
            slug: String::new(),
        }
    }
}

/// `days` as the running service reads it: see the module text.
pub fn lenient_days(text: Option<&str>, default: u32) -> u32 {
    match text.map(str::trim).and_then(|t| t.parse::<i64>().ok()) {
        None => default,
        Some(n) if n < 0 => 1,
        Some(n) => n.min(i64::from(MAX_DAYS)) as u32,
    }
}

impl ScriptsQuery {
    pub fn parse(params: &Params<'_>) -> ScriptsQuery {
        let default = ScriptsQuery::default();
        let repo = match params.get("repo").map(str::trim) {
            None | Some("") => default.repo,
            Some(text) => Repo::parse(text).unwrap_or(default.repo),
        };
        let slug = match params.get("slug").map(str::trim) {
            None => String::new(),
            Some(text) if text.eq_ignore_ascii_case("all") => String::new(),
            Some(text) => text.chars().take(MAX_SLUG_CHARS).collect(),
        };
        ScriptsQuery {
            days: lenient_days(params.get("days"), DEFAULT_DAYS),
            repo,
            slug,
        }
    }

    /// The first second of the period (0 for all time).
    pub fn since(&self, now: i64) -> i64 {
        if self.days == 0 {
            return 0;
        }
        let day = 86_400;
        now - now.rem_euclid(day) - i64::from(self.days - 1) * day
    }

    /// Whether the catalogue's scripts belong in this view: it lists the main repo's scripts.
    pub fn takes_catalogue(&self) -> bool {
        self.slug.is_empty() && matches!(self.repo.0, None | Some(schema::RepoSource::ProxmoxVE))
    }
}

/// One script's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptStat {
    pub app: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub total: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    /// Not final yet (installing, validation, configuring).
    pub installing: u64,
    /// success / (success + failed), percent.
    pub success_rate: f64,
    /// Whole days since the script's creation (catalogue) or its first install.
    pub days_old: i64,
    /// total / the days of the period the script existed in (at least 1).
    pub installs_per_day: f64,
}

/// One of the newest installs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentScript {
    pub app: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub exit_code: i64,
    pub os_type: String,
    pub os_version: String,
    pub pve_version: String,
    /// `YYYY-MM-DD HH:MM:SS.sssZ`, the install's first event.
    pub created: String,
    pub method: String,
}

/// The answer of `/api/scripts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptsAnswer {
    pub total_scripts: u64,
    pub total_installs: u64,
    /// Most installed first (ties by name).
    pub top_scripts: Vec<ScriptStat>,
    pub recent_scripts: Vec<RecentScript>,
    /// The period in days (0: all time), the repo and slug filters, and whether a catalogue was used.
    pub days: u32,
    pub repo: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    pub catalogue: bool,
}

/// Per script and type: the period's counts and the first install ever (of the repo filter).
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct ScriptRow {
    pub app: String,
    pub kind: String,
    pub total: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    pub installing: u64,
    pub first_seen: u32,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct RecentRow {
    app: String,
    kind: String,
    status: String,
    exit_code: i16,
    os_type: String,
    os_version: String,
    pve_version: String,
    created: u32,
    method: String,
}

/// The newest installs of the period (its start bound after the database identifier).
const RECENT_SQL: &str = "
SELECT nsapp AS app, type AS kind, status, toInt16(ifNull(toInt16(exit_code), 0)) AS exit_code,
    ifNull(os_type, '') AS os_type, ifNull(os_version, '') AS os_version,
    ifNull(pve_version, '') AS pve_version, toUInt32(toUnixTimestamp(started_at)) AS created,
    ifNull(method, '') AS method
FROM ?.installs_final
WHERE started_at >= toDateTime(?) AND (? = '' OR repo_source = ?) AND (? = '' OR ifNull(repo_slug, '') = ?)
ORDER BY started_at DESC, execution_id LIMIT ?";

/// `YYYY-MM-DD HH:MM:SS.000Z` of Unix seconds (the running service's `created`).
pub fn created_text(unix: i64) -> String {
    let text = crate::model::timestamp_i64(unix).text;
    match text.strip_suffix('Z') {
        Some(t) if t.len() == 19 => format!("{}.000Z", t.replacen('T', " ", 1)),
        _ => text,
    }
}

fn days_between(from: i64, now: i64) -> i64 {
    (now - from).div_euclid(86_400).max(0)
}

fn per_day(total: u64, days: u32, days_old: i64) -> f64 {
    let existed = days_old.saturating_add(1).max(1);
    let span = if days == 0 {
        existed
    } else {
        existed.min(i64::from(days))
    };
    (total as f64 * 100.0 / span as f64).round() / 100.0
}

/// The answer from the rows of the pass, the newest installs and the catalogue (if it applies).
pub fn build(
    q: &ScriptsQuery,
    now: i64,
    rows: &[ScriptRow],
    recent: Vec<RecentScript>,
    catalogue: Option<&[CatalogScript]>,
) -> ScriptsAnswer {
    struct Acc {
        kinds: Vec<(String, u64, u32)>,
        total: u64,
        success: u64,
        failed: u64,
        aborted: u64,
        installing: u64,
        first_seen: u32,
    }
    let mut apps: HashMap<&str, Acc> = HashMap::new();
    for r in rows {
        let acc = apps.entry(r.app.as_str()).or_insert(Acc {
            kinds: Vec::new(),
            total: 0,
            success: 0,
            failed: 0,
            aborted: 0,
            installing: 0,
            first_seen: u32::MAX,
        });
        acc.kinds.push((r.kind.clone(), r.total, r.first_seen));
        acc.total += r.total;
        acc.success += r.success;
        acc.failed += r.failed;
        acc.aborted += r.aborted;
        acc.installing += r.installing;
        acc.first_seen = acc.first_seen.min(r.first_seen);
    }
    let catalogue = catalogue.filter(|_| q.takes_catalogue());
    let listed: HashMap<&str, &CatalogScript> = catalogue
        .unwrap_or_default()
        .iter()
        .map(|s| (s.slug.as_str(), s))
        .collect();
    let mut top: Vec<ScriptStat> = Vec::new();
    for (app, acc) in &apps {
        let entry = listed.get(app.to_lowercase().as_str());
        if acc.total == 0 && entry.is_none() {
            continue;
        }
        // The type most of the period's installs reported (ties: the earliest seen, then by name).
        let kind = acc
            .kinds
            .iter()
            .max_by(|a, b| {
                a.1.cmp(&b.1)
                    .then_with(|| b.2.cmp(&a.2))
                    .then_with(|| b.0.cmp(&a.0))
            })
            .map(|k| k.0.clone())
            .unwrap_or_default();
        let origin = entry
            .and_then(|s| s.created)
            .unwrap_or(i64::from(acc.first_seen));
        let days_old = days_between(origin, now);
        top.push(ScriptStat {
            app: (*app).to_string(),
            kind,
            total: acc.total,
            success: acc.success,
            failed: acc.failed,
            aborted: acc.aborted,
            installing: acc.installing,
            success_rate: percent(acc.success, acc.success + acc.failed),
            days_old,
            installs_per_day: per_day(acc.total, q.days, days_old),
        });
    }
    let installed: std::collections::HashSet<String> =
        apps.keys().map(|a| a.to_lowercase()).collect();
    for s in catalogue.unwrap_or_default() {
        if installed.contains(&s.slug) {
            continue;
        }
        top.push(ScriptStat {
            app: s.slug.clone(),
            kind: s.kind.clone(),
            total: 0,
            success: 0,
            failed: 0,
            aborted: 0,
            installing: 0,
            success_rate: 0.0,
            days_old: s.created.map_or(0, |c| days_between(c, now)),
            installs_per_day: 0.0,
        });
    }
    top.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.app.cmp(&b.app)));
    ScriptsAnswer {
        total_scripts: top.len() as u64,
        total_installs: top.iter().map(|s| s.total).sum(),
        top_scripts: top,
        recent_scripts: recent,
        days: q.days,
        repo: q.repo.as_str(),
        slug: (!q.slug.is_empty()).then(|| q.slug.clone()),
        catalogue: catalogue.is_some(),
    }
}

/// The rows of the scripts view from the scripts pass (`schema::rollup::SCRIPTS`) of all time (every
/// app and type, with its first start) and of the period (its counts): most installs in the period
/// first, then by app and type, at most `max_rows`.
fn script_rows(
    all: &[crate::rollup::PassRow],
    period: &[crate::rollup::PassRow],
    max_rows: u32,
) -> Vec<ScriptRow> {
    let counts: std::collections::HashMap<&str, &crate::rollup::PassRow> =
        period.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut rows: Vec<ScriptRow> = all
        .iter()
        .filter_map(|r| {
            let (app, kind) = r.key.split_once('\t')?;
            let p = counts.get(r.key.as_str());
            let of = |f: fn(&crate::rollup::PassRow) -> u64| p.map_or(0, |p| f(p));
            Some(ScriptRow {
                app: app.to_owned(),
                kind: kind.to_owned(),
                total: of(|p| p.n),
                success: of(|p| p.s0),
                failed: of(|p| p.s1),
                aborted: of(|p| p.s2),
                installing: of(|p| p.s3),
                first_seen: r.first,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            .then_with(|| a.app.cmp(&b.app))
            .then_with(|| a.kind.cmp(&b.kind))
    });
    rows.truncate(max_rows as usize);
    rows
}

/// Reads the figures of `q` from ClickHouse and builds the answer.
pub async fn load(
    db: &Db,
    q: &ScriptsQuery,
    now: i64,
    catalogue: Option<Arc<Vec<CatalogScript>>>,
    max_rows: u32,
) -> Result<ScriptsAnswer, DbError> {
    let repo = q.repo.sql_value();
    let slug = q.slug.as_str();
    let since = q.since(now);
    let filter = |since| crate::rollup::Filter {
        since,
        repo,
        slug,
        app: "",
    };
    // Every app and type of all time (their first start), and the counts of the period.
    let pass = &schema::rollup::SCRIPTS;
    let (all, period) = if since <= 0 {
        let all = db.pass(pass, filter(0), now).await?;
        (all.clone(), all)
    } else {
        tokio::try_join!(
            db.pass(pass, filter(0), now),
            db.pass(pass, filter(since), now)
        )?
    };
    let rows = script_rows(&all, &period, max_rows);
    let mut recent = Vec::new();
    for start in crate::db::windows(since, now) {
        recent = db
            .timed(
                "scripts_recent",
                db.query(RECENT_SQL)
                    .bind(start)
                    .bind_filter(repo)
                    .bind_filter(slug)
                    .bind(RECENT_SCRIPTS)
                    .fetch_all::<RecentRow>(),
            )
            .await?;
        if recent.len() as u64 >= RECENT_SCRIPTS {
            break;
        }
    }
    let recent = recent
        .into_iter()
        .map(|r| RecentScript {
            app: r.app,
            kind: r.kind,
            status: r.status,
            exit_code: i64::from(r.exit_code),
            os_type: r.os_type,
            os_version: r.os_version,
            pve_version: r.pve_version,
            created: created_text(i64::from(r.created)),
            method: r.method,
        })
        .collect();
    Ok(build(
        q,
        now,
        &rows,
        recent,
        catalogue.as_deref().map(Vec::as_slice),
    ))
}

/// The scripts view: its cache and the catalogue it merges.
pub struct ScriptsService {
    pub cache: SwrCache<ScriptsQuery, Rendered<ScriptsAnswer>, DbError>,
    pub catalog: Arc<Catalog>,
}

impl ScriptsService {
    pub fn new(config: &crate::Config, db: Db) -> ScriptsService {
        let catalog = Arc::new(Catalog::new(config.script_catalog_url.as_deref()));
        let c = catalog.clone();
        let max_rows = config.scripts_max_rows;
        let cache = SwrCache::new(
            "scripts",
            config.cache_capacity,
            config.cache_ttl(),
            config.cache_max_stale(),
            move |q: ScriptsQuery| {
                let (db, catalog) = (db.clone(), c.clone());
                async move {
                    db.steady(|| load(&db, &q, crate::now(), catalog.current(), max_rows))
                        .await
                        .map(crate::rendered)
                }
            },
        )
        .paced(config.cache_refresh_pace)
        .enabled(config.enable_cache);
        ScriptsService { cache, catalog }
    }

    /// The first load of the catalogue, before the web answers (bounded: a slow source only delays the
    /// start by `wait`, then the periodic refresh takes over).
    pub async fn start(&self, wait: Duration) {
        if self.catalog.configured()
            && tokio::time::timeout(wait, self.catalog.refresh())
                .await
                .is_err()
        {
            tracing::warn!(
                "script catalogue: first load took too long; retrying in the background"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(days: u32, repo: Repo) -> ScriptsQuery {
        ScriptsQuery {
            days,
            repo,
            slug: String::new(),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> ScriptsQuery {
        let raw: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ScriptsQuery::parse(&Params(&raw))
    }

    #[test]
    fn parameters_are_lenient_like_the_running_service() {
        let main = Repo(Some(schema::RepoSource::ProxmoxVE));
        let cases: [(&[(&str, &str)], ScriptsQuery); 11] = [
            (&[], q(30, main)),
            (&[("days", "0")], q(0, main)),
            (&[("days", "1")], q(1, main)),
            (&[("days", "14")], q(14, main)),
            (&[("days", "-1")], q(1, main)),
            (&[("days", "-400")], q(1, main)),
            (&[("days", "366")], q(365, main)),
            (&[("days", "abc")], q(30, main)),
            (&[("days", " 7 ")], q(7, main)),
            (&[("repo", "all")], q(30, Repo(None))),
            (&[("repo", "gitlab")], q(30, main)),
        ];
        for (pairs, expected) in cases {
            assert_eq!(params(pairs), expected, "{pairs:?}");
        }
        assert_eq!(params(&[("slug", " a/b ")]).slug, "a/b");
        assert_eq!(params(&[("slug", "ALL")]).slug, "");
        assert_eq!(params(&[("slug", &"x".repeat(1000))]).slug.len(), 256);
    }

    #[test]
    fn periods_are_calendar_days_and_zero_is_all_time() {
        let now = 1_700_000_000; // 2023-11-14 22:13:20 UTC
        let midnight = 1_699_920_000;
        assert_eq!(q(1, Repo(None)).since(now), midnight);
        assert_eq!(q(14, Repo(None)).since(now), midnight - 13 * 86_400);
        assert_eq!(q(0, Repo(None)).since(now), 0);
    }

    #[test]
    fn created_has_the_running_services_form() {
        assert_eq!(created_text(1_700_000_000), "2023-11-14 22:13:20.000Z");
    }

    fn row(app: &str, kind: &str, counts: [u64; 5], first_seen: i64) -> ScriptRow {
        ScriptRow {
            app: app.into(),
            kind: kind.into(),
            total: counts[0],
            success: counts[1],
            failed: counts[2],
            aborted: counts[3],
            installing: counts[4],
            first_seen: first_seen as u32,
        }
    }

    #[test]
    fn scripts_are_counted_ranked_and_completed_from_the_catalogue() {
        let now = 1_700_000_000;
        let day = 86_400;
        let rows = [
            row("docker", "lxc", [10, 6, 2, 1, 1], now - 100 * day),
            row("docker", "vm", [1, 1, 0, 0, 0], now - 5 * day),
            row("old", "lxc", [0, 0, 0, 0, 0], now - 400 * day),
            row("new", "lxc", [3, 0, 3, 0, 0], now - day / 2),
        ];
        let catalogue = [
            CatalogScript {
                slug: "docker".into(),
                kind: "lxc".into(),
                created: Some(now - 1000 * day),
            },
            CatalogScript {
                slug: "unused".into(),
                kind: "vm".into(),
                created: Some(now - 3 * day),
            },
        ];
        let answer = build(&q(30, Repo(None)), now, &rows, Vec::new(), None);
        let got: Vec<_> = answer
            .top_scripts
            .iter()
            .map(|s| {
                (
                    s.app.as_str(),
                    s.kind.as_str(),
                    s.total,
                    s.success_rate,
                    s.days_old,
                    s.installs_per_day,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("docker", "lxc", 11, 77.78, 100, 0.37),
                ("new", "lxc", 3, 0.0, 0, 3.0),
            ]
        );
        assert_eq!((answer.total_scripts, answer.total_installs), (2, 14));
        assert_eq!(answer.top_scripts[0].aborted, 1);
        assert_eq!(answer.top_scripts[0].installing, 1);

        let answer = build(&q(30, Repo(None)), now, &rows, Vec::new(), Some(&catalogue));
        let got: Vec<_> = answer
            .top_scripts
            .iter()
            .map(|s| (s.app.as_str(), s.kind.as_str(), s.total, s.days_old))
            .collect();
        assert_eq!(
            got,
            vec![
                ("docker", "lxc", 11, 1000),
                ("new", "lxc", 3, 0),
                ("unused", "vm", 0, 3)
            ]
        );
        assert!(answer.catalogue);
        // All time: the per-day rate spans the script's whole life.
        let answer = build(&q(0, Repo(None)), now, &rows, Vec::new(), None);
        assert_eq!(answer.top_scripts[0].installs_per_day, 0.11);
        // A fork's view takes no catalogue.
        let fork = ScriptsQuery {
            slug: "someone/fork".into(),
            ..q(30, Repo(None))
        };
        assert!(!build(&fork, now, &rows, Vec::new(), Some(&catalogue)).catalogue);
    }
}
