//! The server-rendered pages (askama templates in `web/templates`). askama escapes every value as HTML, so
//! app names, logs and signatures from strangers show as text; links put them through `urlencode_strict`.
//! Pages carry no inline script or style: charts and the live strip are drawn by `/static/dashboard.js`
//! from the JSON API, and every table is complete without JS.

use std::sync::Arc;

use askama::Template;
use schema::alert::AlertEvent;

use crate::live::Live;
use crate::model::{
    timestamp_i64, AppView, Count, Dashboard, Detail, Errors, ExitCodeInfo, RecordsPage,
};
use crate::params::{Order, Period, RecordsQuery, Repo, Scope, SortColumn};

/// What every page's frame needs.
pub struct Layout {
    pub page: &'static str,
    pub version: &'static str,
    /// `days=…&repo=…` (and `&slug=…`) of the current view, carried by the navigation links.
    pub scope_query: String,
    pub generated: String,
}

impl Layout {
    pub fn new(page: &'static str, scope: Scope) -> Layout {
        Layout {
            page,
            version: crate::static_files::version(),
            scope_query: scope.to_string(),
            generated: timestamp_i64(crate::now()).short(),
        }
    }
}

/// A column header of the installation log, with its sort link when sortable.
pub struct Header {
    pub label: &'static str,
    pub numeric: bool,
    pub link: Option<String>,
    pub arrow: &'static str,
}

const COLUMNS: [(&str, Option<SortColumn>, bool); 8] = [
    ("Started", Some(SortColumn::StartedAt), false),
    ("App", Some(SortColumn::App), false),
    ("Status", Some(SortColumn::Status), false),
    ("Type", Some(SortColumn::Type), false),
    ("OS", Some(SortColumn::Os), false),
    ("Exit code", Some(SortColumn::ExitCode), false),
    ("Duration", Some(SortColumn::Duration), true),
    ("Repository", None, false),
];

/// Headers without sort links (lists that are not the log).
fn plain_headers() -> Vec<Header> {
    COLUMNS
        .iter()
        .map(|(label, _, numeric)| Header {
            label,
            numeric: *numeric,
            link: None,
            arrow: "",
        })
        .collect()
}

/// Headers whose links sort by the column (flipping the order on the current one).
fn sort_headers(q: &RecordsQuery) -> Vec<Header> {
    COLUMNS
        .iter()
        .map(|(label, column, numeric)| {
            let (link, arrow) = match column {
                Some(c) if *c == q.sort => (
                    Some(q.with(*c, q.order.flip(), 1)),
                    if q.order == Order::Asc {
                        " ▲"
                    } else {
                        " ▼"
                    },
                ),
                Some(c) => (Some(q.with(*c, Order::Desc, 1)), ""),
                None => (None, ""),
            };
            Header {
                label,
                numeric: *numeric,
                link,
                arrow,
            }
        })
        .collect()
}

fn period_choices(current: Period) -> Vec<(&'static str, &'static str, bool)> {
    Period::ALL
        .iter()
        .map(|p| (p.as_str(), p.label(), *p == current))
        .collect()
}

fn repo_choices(current: Repo) -> Vec<(&'static str, bool)> {
    Repo::CHOICES
        .iter()
        .map(|r| (r.as_str(), *r == current))
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub layout: Layout,
    pub d: Arc<Dashboard>,
    pub live: Arc<Live>,
    pub periods: Vec<(&'static str, &'static str, bool)>,
    pub repos: Vec<(&'static str, bool)>,
    /// The repo-slug filter's text (empty for every slug).
    pub slug: String,
    pub extra_hidden: Vec<(String, String)>,
    pub min_installs: u64,
    pub small_tables: Vec<(&'static str, Vec<Count>)>,
    pub headers: Vec<Header>,
    /// Installs ever stored for the repo and slug filters (the all-time card).
    pub total_all_time: u64,
    /// Seconds between refreshes of the figures by `/static/refresh.js` (0: none).
    pub refresh_secs: u64,
}

impl DashboardPage {
    pub fn new(scope: Scope, d: Arc<Dashboard>, live: Arc<Live>) -> DashboardPage {
        let small_tables = vec![
            ("Operating systems", d.os_distribution.clone()),
            ("Proxmox VE versions", d.pve_versions.clone()),
            ("Type", d.type_stats.clone()),
            ("Method", d.method_stats.clone()),
            ("CPU vendor", d.cpu_vendors.clone()),
            ("GPU vendor", d.gpu_vendors.clone()),
            ("Error categories", d.error_categories.clone()),
            ("Install duration", d.duration_buckets.clone()),
        ];
        DashboardPage {
            layout: Layout::new("dashboard", scope),
            periods: period_choices(scope.period),
            repos: repo_choices(scope.repo),
            slug: scope.slug.as_str().to_string(),
            extra_hidden: Vec::new(),
            min_installs: scope.period.min_installs(),
            small_tables,
            headers: plain_headers(),
            total_all_time: 0,
            refresh_secs: 0,
            d,
            live,
        }
    }
}

#[derive(Template)]
#[template(path = "errors.html")]
pub struct ErrorsPage {
    pub layout: Layout,
    pub e: Arc<Errors>,
    pub periods: Vec<(&'static str, &'static str, bool)>,
    pub repos: Vec<(&'static str, bool)>,
    /// The repo-slug filter's text (empty for every slug).
    pub slug: String,
    pub extra_hidden: Vec<(String, String)>,
}

impl ErrorsPage {
    pub fn new(scope: Scope, e: Arc<Errors>) -> ErrorsPage {
        ErrorsPage {
            layout: Layout::new("errors", scope),
            periods: period_choices(scope.period),
            repos: repo_choices(scope.repo),
            slug: scope.slug.as_str().to_string(),
            extra_hidden: Vec::new(),
            e,
        }
    }
}

/// `/error-analysis`: the failure analysis of [`ErrorsPage`] with the timeline, the failure rate per
/// type, the categories with their top apps and the newest errors with their masked log.
#[derive(Template)]
#[template(path = "error_analysis.html")]
pub struct ErrorAnalysisPage {
    pub layout: Layout,
    pub e: Arc<Errors>,
    pub periods: Vec<(&'static str, &'static str, bool)>,
    pub repos: Vec<(&'static str, bool)>,
    /// The repo-slug filter's text (empty for every slug).
    pub slug: String,
    pub extra_hidden: Vec<(String, String)>,
}

impl ErrorAnalysisPage {
    pub fn new(scope: Scope, e: Arc<Errors>) -> ErrorAnalysisPage {
        ErrorAnalysisPage {
            layout: Layout::new("error-analysis", scope),
            periods: period_choices(scope.period),
            repos: repo_choices(scope.repo),
            slug: scope.slug.as_str().to_string(),
            extra_hidden: Vec::new(),
            e,
        }
    }

    /// The largest daily failed + aborted count, for the timeline's bar heights.
    pub fn timeline_max(&self) -> u64 {
        self.e
            .error_timeline
            .iter()
            .map(|d| d.failed + d.aborted)
            .max()
            .unwrap_or(0)
            .max(1)
    }
}

/// `/script-analysis`: the answer of `/api/scripts` as tables, with a period selector (all time too).
#[derive(Template)]
#[template(path = "script_analysis.html")]
pub struct ScriptAnalysisPage {
    pub layout: Layout,
    pub s: Arc<crate::scripts::ScriptsAnswer>,
    /// `(days, label, selected)` of each period.
    pub periods: Vec<(u32, &'static str, bool)>,
    /// `(value, selected)` of each repo choice.
    pub repos: Vec<(&'static str, bool)>,
    pub days: u32,
    pub slug: String,
    /// The most installed scripts.
    pub most: Vec<crate::scripts::ScriptStat>,
    /// The least installed scripts (zeros first), fewest first.
    pub least: Vec<crate::scripts::ScriptStat>,
    /// Scripts with decided installs, by success rate (lowest first).
    pub by_rate: Vec<crate::scripts::ScriptStat>,
}

/// The periods of the script analysis: the running service's `days` values, 0 = all time.
pub const SCRIPT_PERIODS: [(u32, &str); 7] = [
    (1, "Today"),
    (7, "7 days"),
    (14, "14 days"),
    (30, "30 days"),
    (90, "90 days"),
    (365, "365 days"),
    (0, "All time"),
];

impl ScriptAnalysisPage {
    pub fn new(
        q: &crate::scripts::ScriptsQuery,
        s: Arc<crate::scripts::ScriptsAnswer>,
    ) -> ScriptAnalysisPage {
        let top = &s.top_scripts;
        let most = top.iter().take(25).cloned().collect();
        let mut least: Vec<_> = top.iter().rev().take(25).cloned().collect();
        least.sort_by(|a, b| a.total.cmp(&b.total).then_with(|| a.app.cmp(&b.app)));
        let mut by_rate: Vec<_> = top
            .iter()
            .filter(|x| x.success + x.failed > 0)
            .cloned()
            .collect();
        by_rate.sort_by(|a, b| {
            a.success_rate
                .total_cmp(&b.success_rate)
                .then_with(|| b.total.cmp(&a.total))
                .then_with(|| a.app.cmp(&b.app))
        });
        by_rate.truncate(25);
        let repos = Repo::CHOICES
            .iter()
            .map(|r| (r.as_str(), *r == q.repo))
            .collect();
        ScriptAnalysisPage {
            layout: Layout::new("script-analysis", Scope::default()),
            periods: SCRIPT_PERIODS
                .iter()
                .map(|(days, label)| (*days, *label, *days == q.days))
                .collect(),
            repos,
            days: q.days,
            slug: q.slug.clone(),
            most,
            least,
            by_rate,
            s,
        }
    }
}

#[derive(Template)]
#[template(path = "app.html")]
pub struct AppPage {
    pub layout: Layout,
    pub a: Arc<AppView>,
    pub periods: Vec<(&'static str, &'static str, bool)>,
    pub repos: Vec<(&'static str, bool)>,
    /// The repo-slug filter's text (empty for every slug).
    pub slug: String,
    pub extra_hidden: Vec<(String, String)>,
}

impl AppPage {
    pub fn new(scope: Scope, a: Arc<AppView>) -> AppPage {
        AppPage {
            layout: Layout::new("app", scope),
            periods: period_choices(scope.period),
            repos: repo_choices(scope.repo),
            slug: scope.slug.as_str().to_string(),
            extra_hidden: Vec::new(),
            a,
        }
    }
}

#[derive(Template)]
#[template(path = "installs.html")]
pub struct InstallsPage {
    pub layout: Layout,
    pub p: Arc<RecordsPage>,
    pub app: String,
    pub os: String,
    pub statuses: Vec<(&'static str, bool)>,
    pub kinds: Vec<(&'static str, bool)>,
    pub repos: Vec<(&'static str, bool)>,
    /// The repo-slug filter's text (empty for every slug).
    pub slug: String,
    pub periods: Vec<(&'static str, &'static str, bool)>,
    pub csv_query: String,
    pub prev_link: Option<String>,
    pub next_link: Option<String>,
    pub headers: Vec<Header>,
}

impl InstallsPage {
    pub fn new(q: &RecordsQuery, p: Arc<RecordsPage>) -> InstallsPage {
        let mut statuses = vec![("all", q.status.is_none())];
        statuses.extend(
            schema::Status::ALL
                .iter()
                .map(|s| (s.as_str(), q.status == Some(*s))),
        );
        let mut kinds = vec![("all", q.kind.is_none())];
        kinds.extend(
            schema::Kind::ALL
                .iter()
                .map(|k| (k.as_str(), q.kind == Some(*k))),
        );
        let page = u64::from(q.page);
        InstallsPage {
            layout: Layout::new("installs", q.scope),
            app: q.app.clone().unwrap_or_default(),
            os: q.os.clone().unwrap_or_default(),
            statuses,
            kinds,
            repos: repo_choices(q.scope.repo),
            slug: q.scope.slug.as_str().to_string(),
            periods: period_choices(q.scope.period),
            csv_query: format!(
                "{}&sort={}&order={}",
                q.filter_query(),
                q.sort.as_str(),
                q.order.as_str()
            ),
            prev_link: (q.page > 1).then(|| q.with(q.sort, q.order, q.page - 1)),
            next_link: (page < p.pages).then(|| q.with(q.sort, q.order, q.page + 1)),
            headers: sort_headers(q),
            p,
        }
    }
}

#[derive(Template)]
#[template(path = "detail.html")]
pub struct DetailPage {
    pub layout: Layout,
    pub d: Detail,
}

impl DetailPage {
    pub fn new(d: Detail) -> DetailPage {
        DetailPage {
            layout: Layout::new("installs", Scope::default()),
            d,
        }
    }
}

#[derive(Template)]
#[template(path = "alerts.html")]
pub struct AlertsPage {
    pub layout: Layout,
    pub alerts: Arc<Vec<AlertEvent>>,
}

impl AlertsPage {
    pub fn new(alerts: Arc<Vec<AlertEvent>>) -> AlertsPage {
        AlertsPage {
            layout: Layout::new("alerts", Scope::default()),
            alerts,
        }
    }
}

#[derive(Template)]
#[template(path = "exit_codes.html")]
pub struct ExitCodesPage {
    pub layout: Layout,
    pub codes: Vec<ExitCodeInfo>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    version: &'a str,
}

/// The HTML body of an error answer.
pub fn error_page(status: u16, code: &str, message: &str) -> String {
    ErrorPage {
        status,
        code,
        message,
        version: crate::static_files::version(),
    }
    .render()
    .unwrap_or_else(|_| format!("{status} {code}"))
}
