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
