//! Request parameters, parsed into closed types before anything reaches a query: the period, repo and
//! repo-slug filters, the installation-log filter with its whitelisted sort columns, and pagination.
//! Anything else is a [`BadParam`] that names the parameter (a 400 JSON error, never a 500). Unknown
//! parameters are ignored.

use std::fmt;

use schema::{Kind, RepoSource, Status};

/// A parameter that could not be used: the parameter's name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct BadParam {
    pub param: &'static str,
    pub message: String,
}

fn bad(param: &'static str, message: impl Into<String>) -> BadParam {
    BadParam {
        param,
        message: message.into(),
    }
}

/// The period a view covers: installs whose first event lies in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Period {
    /// Since midnight UTC.
    Today,
    Days7,
    #[default]
    Days30,
    Days90,
    Days365,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Today,
        Period::Days7,
        Period::Days30,
        Period::Days90,
        Period::Days365,
    ];

    /// Accepts `today` (or `1`), `7`, `30`, `90`, `365`.
    pub fn parse(text: &str) -> Result<Period, BadParam> {
        match text.trim() {
            "today" | "1" => Ok(Period::Today),
            "7" => Ok(Period::Days7),
            "30" => Ok(Period::Days30),
            "90" => Ok(Period::Days90),
            "365" => Ok(Period::Days365),
            other => Err(bad(
                "days",
                format!("{other:?} is not one of today, 7, 30, 90, 365"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Today => "today",
            Period::Days7 => "7",
            Period::Days30 => "30",
            Period::Days90 => "90",
            Period::Days365 => "365",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Period::Today => "Today",
            Period::Days7 => "7 days",
            Period::Days30 => "30 days",
            Period::Days90 => "90 days",
            Period::Days365 => "365 days",
        }
    }

    /// The first second of the period, as Unix seconds, for `now` (Unix seconds).
    pub fn since(self, now: i64) -> i64 {
        let day = 86_400;
        match self {
            Period::Today => now - now.rem_euclid(day),
            Period::Days7 => now - 7 * day,
            Period::Days30 => now - 30 * day,
            Period::Days90 => now - 90 * day,
            Period::Days365 => now - 365 * day,
        }
    }

    /// The fewest installs an app needs to be ranked by failure rate: grows with the period, so that a
    /// handful of installs does not top a year's list.
    pub fn min_installs(self) -> u64 {
        match self {
            Period::Today => 5,
            Period::Days7 => 10,
            Period::Days30 => 20,
            Period::Days90 => 50,
            Period::Days365 => 100,
        }
    }
}

/// The repo filter: one repo source or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Repo(pub Option<RepoSource>);

impl Repo {
    pub const CHOICES: [Repo; 4] = [
        Repo(None),
        Repo(Some(RepoSource::ProxmoxVE)),
        Repo(Some(RepoSource::ProxmoxVED)),
        Repo(Some(RepoSource::External)),
    ];

    /// Accepts `all` (or empty), `ProxmoxVE`, `ProxmoxVED`, `external`, in any case.
    pub fn parse(text: &str) -> Result<Repo, BadParam> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("all") {
            return Ok(Repo(None));
        }
        RepoSource::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text))
            .map(|r| Repo(Some(r)))
            .ok_or_else(|| {
                bad(
                    "repo",
                    format!("{text:?} is not one of all, ProxmoxVE, ProxmoxVED, external"),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        self.0.map_or("all", RepoSource::as_str)
    }

    /// The value bound into SQL: empty means every repo.
    pub fn sql_value(self) -> &'static str {
        self.0.map_or("", RepoSource::as_str)
    }
}

/// The most bytes of a slug (the contract's `repo_slug` rule).
const MAX_SLUG: usize = schema::validate::MAX_REPO_SLUG_BYTES;

/// The repo-slug filter: one `owner/repo` the scripts were loaded from (the contract's `repo_slug` rule),
/// or every one. Kept inline (at most 128 ASCII bytes) so that [`Scope`] stays `Copy`: it is the key of
/// the view caches and is passed by value everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slug {
    len: u8,
    bytes: [u8; MAX_SLUG],
}

impl Default for Slug {
    fn default() -> Slug {
        Slug {
            len: 0,
            bytes: [0; MAX_SLUG],
        }
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slug({:?})", self.as_str())
    }
}

impl Slug {
    /// Accepts `all` (or empty) and an `owner/repo` by the contract's rule; anything else is refused.
    pub fn parse(text: &str) -> Result<Slug, BadParam> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("all") {
            return Ok(Slug::default());
        }
        if !schema::validate::is_repo_slug(text) {
            return Err(bad(
                "slug",
                format!(
                    "{:?} is not owner/repo (letters, digits, '.', '_', '-'; at most {MAX_SLUG} bytes)",
                    schema::privacy::cut_at_char(text, 140)
                ),
            ));
        }
        let mut slug = Slug::default();
        slug.bytes[..text.len()].copy_from_slice(text.as_bytes());
        slug.len = text.len() as u8;
        Ok(slug)
    }

    /// The value bound into SQL: empty means every slug.
    pub fn sql_value(&self) -> &str {
        // Only ASCII by the slug rule, so always UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The slug, or `None` for every one.
    pub fn get(&self) -> Option<&str> {
        (self.len > 0).then(|| self.sql_value())
    }

    /// The value in links and forms: empty for every slug.
    pub fn as_str(&self) -> &str {
        self.sql_value()
    }
}

/// The period, repo and repo slug of an overview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scope {
    pub period: Period,
    pub repo: Repo,
    pub slug: Slug,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "days={}&repo={}",
            self.period.as_str(),
            self.repo.as_str()
        )?;
        if let Some(slug) = self.slug.get() {
            write!(f, "&slug={}", encode_component(slug))?;
        }
        Ok(())
    }
}

/// The sort columns of the installation log: each maps to one fixed SQL identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SortColumn {
    #[default]
    StartedAt,
    FinishedAt,
    App,
    Status,
    Type,
    Os,
    ExitCode,
    Duration,
}

impl SortColumn {
    pub const ALL: [SortColumn; 8] = [
        SortColumn::StartedAt,
        SortColumn::FinishedAt,
        SortColumn::App,
        SortColumn::Status,
        SortColumn::Type,
        SortColumn::Os,
        SortColumn::ExitCode,
        SortColumn::Duration,
    ];

    /// The name in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            SortColumn::StartedAt => "started_at",
            SortColumn::FinishedAt => "finished_at",
            SortColumn::App => "nsapp",
            SortColumn::Status => "status",
            SortColumn::Type => "type",
            SortColumn::Os => "os_type",
            SortColumn::ExitCode => "exit_code",
            SortColumn::Duration => "duration",
        }
    }

    /// The column of `installs_final` it sorts by: a constant, never request text.
    pub fn sql(self) -> &'static str {
        match self {
            SortColumn::StartedAt => "started_at",
            SortColumn::FinishedAt => "finished_at",
            SortColumn::App => "nsapp",
            SortColumn::Status => "status",
            SortColumn::Type => "type",
            SortColumn::Os => "os_type",
            SortColumn::ExitCode => "exit_code",
            SortColumn::Duration => "duration",
        }
    }

    pub fn parse(text: &str) -> Result<SortColumn, BadParam> {
        SortColumn::ALL
            .into_iter()
            .find(|c| c.as_str() == text.trim())
            .ok_or_else(|| {
                let names: Vec<_> = SortColumn::ALL.iter().map(|c| c.as_str()).collect();
                bad(
                    "sort",
                    format!("{text:?} is not one of {}", names.join(", ")),
                )
            })
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

impl Order {
    pub fn parse(text: &str) -> Result<Order, BadParam> {
        match text.trim().to_ascii_lowercase().as_str() {
            "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            other => Err(bad("order", format!("{other:?} is not asc or desc"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }

    pub fn flip(self) -> Order {
        match self {
            Order::Asc => Order::Desc,
            Order::Desc => Order::Asc,
        }
    }
}

/// The most rows one page of the installation log may ask for.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Pages beyond this are refused (deep OFFSETs are slow and nobody reads them).
pub const MAX_PAGE: u32 = 10_000;

/// The filter, sort and page of the installation log. Every text value is bound, never formatted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RecordsQuery {
    pub scope: Scope,
    /// Exact `nsapp`.
    pub app: Option<String>,
    pub status: Option<Status>,
    /// Exact `os_type`.
    pub os: Option<String>,
    pub kind: Option<Kind>,
    pub sort: SortColumn,
    pub order: Order,
    /// 1-based.
    pub page: u32,
    pub limit: u32,
}

impl RecordsQuery {
    /// The query string of this filter (without page), for links and the CSV export.
    pub fn filter_query(&self) -> String {
        let mut pairs = vec![
            ("days", self.scope.period.as_str().to_string()),
            ("repo", self.scope.repo.as_str().to_string()),
        ];
        if let Some(slug) = self.scope.slug.get() {
            pairs.push(("slug", slug.to_string()));
        }
        if let Some(app) = &self.app {
            pairs.push(("app", app.clone()));
        }
        if let Some(status) = self.status {
            pairs.push(("status", status.as_str().to_string()));
        }
        if let Some(os) = &self.os {
            pairs.push(("os", os.clone()));
        }
        if let Some(kind) = self.kind {
            pairs.push(("type", kind.as_str().to_string()));
        }
        encode_pairs(&pairs)
    }

    /// The query string of this filter with another sort, page or size.
    pub fn with(&self, sort: SortColumn, order: Order, page: u32) -> String {
        format!(
            "{}&sort={}&order={}&page={}&limit={}",
            self.filter_query(),
            sort.as_str(),
            order.as_str(),
            page,
            self.limit
        )
    }
}

/// Percent-encodes `key=value` pairs for a query string.
pub fn encode_pairs(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but unreserved characters (RFC 3986): [`fleet::percent::encode`].
pub fn encode_component(text: &str) -> String {
    fleet::percent::encode(text)
}

/// The raw parameters of a request, first value of each name wins.
pub struct Params<'a>(pub &'a [(String, String)]);

impl<'a> Params<'a> {
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A value that is present and not blank.
    fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    /// `days` (alias `period`), `repo` and `slug`.
    pub fn scope(&self) -> Result<Scope, BadParam> {
        let period = match self.value("days").or_else(|| self.value("period")) {
            Some(text) => Period::parse(text)?,
            None => Period::default(),
        };
        let repo = match self.value("repo") {
            Some(text) => Repo::parse(text)?,
            None => Repo::default(),
        };
        let slug = match self.value("slug") {
            Some(text) => Slug::parse(text)?,
            None => Slug::default(),
        };
        Ok(Scope { period, repo, slug })
    }

    /// The installation-log parameters: `app`, `status`, `os`, `type`, `sort`, `order`, `page`,
    /// `limit` (at most [`MAX_PAGE_SIZE`], default `default_limit`), plus the scope.
    pub fn records(&self, default_limit: u32) -> Result<RecordsQuery, BadParam> {
        let scope = self.scope()?;
        let app = self.value("app").map(|v| v.trim().to_string());
        if app.as_ref().is_some_and(|a| a.chars().count() > 128) {
            return Err(bad("app", "longer than 128 characters"));
        }
        let status = match self.value("status") {
            None | Some("all") => None,
            Some(text) => Some(
                Status::ALL
                    .into_iter()
                    .find(|s| s.as_str() == text.trim())
                    .ok_or_else(|| bad("status", format!("{text:?} is not a status")))?,
            ),
        };
        let os = self.value("os").map(|v| v.trim().to_ascii_lowercase());
        if os.as_ref().is_some_and(|o| o.chars().count() > 64) {
            return Err(bad("os", "longer than 64 characters"));
        }
        let kind = match self.value("type") {
            None | Some("all") => None,
            Some(text) => Some(
                Kind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == text.trim())
                    .ok_or_else(|| {
                        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                        bad(
                            "type",
                            format!("{text:?} is not one of {}", kinds.join(", ")),
                        )
                    })?,
            ),
        };
        let sort = self.value("sort").map(SortColumn::parse).transpose()?;
        let order = self.value("order").map(Order::parse).transpose()?;
        let page = number(self.value("page"), "page", 1, 1, MAX_PAGE)?;
        let limit = number(
            self.value("limit"),
            "limit",
            default_limit,
            1,
            MAX_PAGE_SIZE,
        )?;
        Ok(RecordsQuery {
            scope,
            app,
            status,
            os,
            kind,
            sort: sort.unwrap_or_default(),
            order: order.unwrap_or_default(),
            page,
            limit,
        })
    }
}

fn number(
    text: Option<&str>,
    param: &'static str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, BadParam> {
    let Some(text) = text else {
        return Ok(default);
    };
    let value: u32 = text
        .trim()
        .parse()
        .map_err(|_| bad(param, format!("{text:?} is not a whole number")))?;
    if !(min..=max).contains(&value) {
        return Err(bad(param, format!("{value} is not within {min}..={max}")));
    }
    Ok(value)
}

/// Checks a path's app name: not empty, at most 128 characters, no control characters.
pub fn app_name(name: &str) -> Result<String, BadParam> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(bad(
            "nsapp",
            "must be 1..=128 characters without control characters",
        ));
    }
    Ok(name.to_string())
}

/// Checks an install id against the contract's id rule.
pub fn execution_id(id: &str) -> Result<String, BadParam> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(bad("execution_id", "not a valid install id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(query: &[(&str, &str)], expected: Result<RecordsQuery, &str>) {
        let raw = pairs(query);
        let got = Params(&raw).records(50);
        match expected {
            Ok(q) => assert_eq!(got, Ok(q), "{query:?}"),
            Err(param) => assert_eq!(got.map_err(|e| e.param), Err(param), "{query:?}"),
        }
    }

    #[test]
    fn records_parameters_are_parsed_or_refused_by_name() {
        let base = RecordsQuery {
            page: 1,
            limit: 50,
            ..RecordsQuery::default()
        };
        check(&[], Ok(base.clone()));
        check(
            &[
                ("days", "7"),
                ("repo", "proxmoxved"),
                ("app", " docker "),
                ("status", "failed"),
                ("type", "vm"),
                ("sort", "nsapp"),
                ("order", "ASC"),
                ("page", "3"),
                ("limit", "10"),
                ("unknown", "x"),
            ],
            Ok(RecordsQuery {
                scope: Scope {
                    period: Period::Days7,
                    repo: Repo(Some(RepoSource::ProxmoxVED)),
                    slug: Slug::default(),
                },
                app: Some("docker".into()),
                status: Some(Status::Failed),
                kind: Some(Kind::Vm),
                sort: SortColumn::App,
                order: Order::Asc,
                page: 3,
                limit: 10,
                ..base.clone()
            }),
        );
        check(
            &[("type", "turnkey"), ("slug", " someuser/ProxmoxVE-fork ")],
            Ok(RecordsQuery {
                scope: Scope {
                    slug: Slug::parse("someuser/ProxmoxVE-fork").expect("slug"),
                    ..Scope::default()
                },
                kind: Some(Kind::Turnkey),
                ..base.clone()
            }),
        );
        check(&[("slug", "all")], Ok(base.clone()));
        check(&[("slug", "")], Ok(base.clone()));
        check(&[("days", "8")], Err("days"));
        check(&[("repo", "gitlab")], Err("repo"));
        check(&[("status", "done")], Err("status"));
        check(&[("type", "ct")], Err("type"));
        check(&[("slug", "community-scripts")], Err("slug"));
        check(&[("slug", "a/b/c")], Err("slug"));
        check(&[("slug", "a/b' OR 1=1 --")], Err("slug"));
        check(&[("slug", "https://github.com/a/b")], Err("slug"));
        check(&[("slug", &format!("a/{}", "b".repeat(127)))], Err("slug"));
        check(&[("sort", "error; DROP TABLE x")], Err("sort"));
        check(&[("order", "sideways")], Err("order"));
        check(&[("page", "0")], Err("page"));
        check(&[("page", "-1")], Err("page"));
        check(&[("limit", "501")], Err("limit"));
        check(&[("limit", "1e3")], Err("limit"));
    }

    #[test]
    fn periods_start_where_they_should() {
        let now = 1_700_000_000;
        assert_eq!(Period::Today.since(now), 1_699_920_000);
        assert_eq!(Period::Days7.since(now), now - 7 * 86_400);
        assert!(Period::Days365.min_installs() > Period::Today.min_installs());
    }

    #[test]
    fn ids_and_names_are_checked() {
        assert!(execution_id("3f2b8c1e-9d4a").is_ok());
        assert!(execution_id("-x").is_err());
        assert!(execution_id("a b").is_err());
        assert!(app_name("<img src=x onerror=alert(1)>").is_ok());
        assert!(app_name("a\u{7}").is_err());
        assert!(app_name(" ").is_err());
    }

    #[test]
    fn slugs_keep_their_text_and_ride_along_in_links() {
        let longest = format!("a/{}", "b".repeat(126));
        for text in [
            "a/b",
            "community-scripts/ProxmoxVE",
            "x.y_z-1/Repo.2",
            longest.as_str(),
        ] {
            let slug = Slug::parse(text).expect("slug");
            assert_eq!((slug.get(), slug.sql_value()), (Some(text), text));
        }
        assert_eq!(Slug::default().get(), None);
        assert_eq!(Slug::parse(" ALL ").expect("all"), Slug::default());
        let scope = Scope {
            period: Period::Days7,
            slug: Slug::parse("someuser/ProxmoxVE-fork").expect("slug"),
            ..Scope::default()
        };
        assert_eq!(
            scope.to_string(),
            "days=7&repo=all&slug=someuser%2FProxmoxVE-fork"
        );
        assert_eq!(Scope::default().to_string(), "days=30&repo=all");
        let q = RecordsQuery {
            scope,
            ..RecordsQuery::default()
        };
        assert_eq!(
            q.filter_query(),
            "days=7&repo=all&slug=someuser%2FProxmoxVE-fork"
        );
    }

    #[test]
    fn components_are_encoded() {
        assert_eq!(encode_component("a b&c/<>"), "a%20b%26c%2F%3C%3E");
    }
}
