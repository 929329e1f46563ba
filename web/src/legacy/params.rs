//! The parameters of the running service's read API, parsed leniently into closed, normalized types:
//! nothing here is refused. `days` is clamped (negative → 1, 0 or > 365 → 365, unparseable → the route's
//! default), `limit` is clamped to 1..=100, an unknown `sort` is `-created`, an unknown repo, status or
//! type filters on a value no install has. The typed values are the cache keys, so `?days=01&x=y` and
//! `?days=1` share one entry and junk parameters cannot grow the cache.

use schema::{Kind, RepoSource, Status};

use crate::params::Slug;

/// Most days a period covers.
pub const MAX_DAYS: u16 = 365;
/// Most rows of one page.
pub const MAX_LIMIT: u32 = 100;
/// Rows of a page when `limit` is absent or unparseable.
pub const DEFAULT_LIMIT: u32 = 50;
/// Pages beyond this are clamped (deep OFFSETs are slow and nobody reads them).
pub const MAX_PAGE: u32 = 10_000;
/// Longest substring filter kept (longer text is cut).
const MAX_TEXT: usize = 128;

/// "N days": today (UTC) plus the N−1 calendar days before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Days(u16);

impl Days {
    /// The lenient rule: absent or unparseable → `default`; negative → 1; 0 or > 365 → 365.
    pub fn parse(text: Option<&str>, default: u16) -> Days {
        let Some(n) = text.and_then(|t| t.trim().parse::<i64>().ok()) else {
            return Days(default);
        };
        Days(match n {
            n if n < 0 => 1,
            0 => MAX_DAYS,
            n if n > i64::from(MAX_DAYS) => MAX_DAYS,
            n => n as u16,
        })
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// Midnight UTC of the first day, Unix seconds, for `now` (Unix seconds).
    pub fn since(self, now: i64) -> i64 {
        let today = now - now.rem_euclid(86_400);
        today - (i64::from(self.0) - 1) * 86_400
    }

    /// The dates (`YYYY-MM-DD`) of the period, oldest first: exactly `self.get()` of them.
    pub fn dates(self, now: i64) -> Vec<String> {
        let since = self.since(now);
        (0..i64::from(self.0))
            .map(|i| day_text(since + i * 86_400))
            .collect()
    }

    /// The fewest installs an app needs to be listed in `failed_apps`: 5 for a day, 15 up to a week,
    /// 40 up to a month, 100 beyond.
    pub fn min_installs(self) -> u64 {
        match self.0 {
            0..=1 => 5,
            2..=7 => 15,
            8..=30 => 40,
            _ => 100,
        }
    }
}

/// `YYYY-MM-DD` of a Unix second (UTC).
pub fn day_text(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_default()
}

/// The repo filter: `ProxmoxVE` unless asked, `all` for every repo, an unknown name matches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoFilter {
    All,
    Is(RepoSource),
    Nothing,
}

impl RepoFilter {
    pub fn parse(text: Option<&str>) -> RepoFilter {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return RepoFilter::Is(RepoSource::ProxmoxVE);
        };
        if text.eq_ignore_ascii_case("all") {
            return RepoFilter::All;
        }
        RepoSource::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text))
            .map_or(RepoFilter::Nothing, RepoFilter::Is)
    }

    /// The value bound into SQL: empty for every repo; a value no install has for `Nothing`.
    pub fn sql_value(self) -> &'static str {
        match self {
            RepoFilter::All => "",
            RepoFilter::Is(r) => r.as_str(),
            RepoFilter::Nothing => NO_MATCH,
        }
    }
}

/// Bound for a filter that must match nothing (no install carries a NUL byte in these columns).
pub const NO_MATCH: &str = "\u{0}";

/// The repo-slug filter: empty (or absent) for every slug; a slug that breaks the contract's rule matches
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlugFilter {
    Any,
    Is(Slug),
    Nothing,
}

impl SlugFilter {
    pub fn parse(text: Option<&str>) -> SlugFilter {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return SlugFilter::Any;
        };
        match Slug::parse(text) {
            Ok(slug) if slug.get().is_none() => SlugFilter::Any,
            Ok(slug) => SlugFilter::Is(slug),
            Err(_) => SlugFilter::Nothing,
        }
    }

    pub fn sql_value(&self) -> &str {
        match self {
            SlugFilter::Any => "",
            SlugFilter::Is(slug) => slug.sql_value(),
            SlugFilter::Nothing => NO_MATCH,
        }
    }
}

/// The period and filters shared by every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope {
    pub days: Days,
    pub repo: RepoFilter,
    pub slug: SlugFilter,
}

impl Scope {
    pub fn parse(raw: &Raw<'_>, default_days: u16) -> Scope {
        Scope {
            days: Days::parse(raw.get("days"), default_days),
            repo: RepoFilter::parse(raw.get("repo")),
            slug: SlugFilter::parse(raw.get("slug")),
        }
    }
}

/// The sort columns of `/api/records`, each one fixed SQL expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortColumn {
    Created,
    Nsapp,
    Status,
    OsType,
    Type,
    Method,
    ExitCode,
}

impl SortColumn {
    pub const ALL: [SortColumn; 7] = [
        SortColumn::Created,
        SortColumn::Nsapp,
        SortColumn::Status,
        SortColumn::OsType,
        SortColumn::Type,
        SortColumn::Method,
        SortColumn::ExitCode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortColumn::Created => "created",
            SortColumn::Nsapp => "nsapp",
            SortColumn::Status => "status",
            SortColumn::OsType => "os_type",
            SortColumn::Type => "type",
            SortColumn::Method => "method",
            SortColumn::ExitCode => "exit_code",
        }
    }

    /// The expression over `installs_final` it sorts by, absent values as the record shows them (empty
    /// text, exit code 0): a constant, never request text.
    pub fn sql(self) -> &'static str {
        match self {
            SortColumn::Created => "started_at",
            SortColumn::Nsapp => "nsapp",
            SortColumn::Status => "status",
            SortColumn::OsType => "ifNull(os_type, '')",
            SortColumn::Type => "type",
            SortColumn::Method => "ifNull(method, '')",
            SortColumn::ExitCode => "ifNull(exit_code, 0)",
        }
    }
}

/// A sort: a column and whether it is descending (`-` in front).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sort {
    pub column: SortColumn,
    pub descending: bool,
}

impl Sort {
    pub const DEFAULT: Sort = Sort {
        column: SortColumn::Created,
        descending: true,
    };

    /// `created`, `-nsapp`, …; anything else is `-created`.
    pub fn parse(text: Option<&str>) -> Sort {
        let Some(text) = text.map(str::trim) else {
            return Sort::DEFAULT;
        };
        let (descending, name) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        SortColumn::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .map_or(Sort::DEFAULT, |column| Sort { column, descending })
    }

    pub fn direction(self) -> &'static str {
        if self.descending {
            "DESC"
        } else {
            "ASC"
        }
    }
}

/// A closed filter: any value, one value, or a value nothing has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter<T> {
    Any,
    Is(T),
    Nothing,
}

impl<T: Copy> Filter<T> {
    fn parse(text: Option<&str>, all: &[T], name: impl Fn(T) -> &'static str) -> Filter<T> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty() && *t != "all") else {
            return Filter::Any;
        };
        all.iter()
            .copied()
            .find(|v| name(*v).eq_ignore_ascii_case(text))
            .map_or(Filter::Nothing, Filter::Is)
    }
}

impl Filter<Status> {
    pub fn sql_value(self) -> &'static str {
        match self {
            Filter::Any => "",
            Filter::Is(s) => s.as_str(),
            Filter::Nothing => NO_MATCH,
        }
    }
}

impl Filter<Kind> {
    pub fn sql_value(self) -> &'static str {
        match self {
            Filter::Any => "",
            Filter::Is(k) => k.as_str(),
            Filter::Nothing => NO_MATCH,
        }
    }
}

/// The query of `/api/records` (and its CSV), normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordsQuery {
    pub scope: Scope,
    pub page: u32,
    pub limit: u32,
    pub status: Filter<Status>,
    pub kind: Filter<Kind>,
    /// Substring of `nsapp`, lower-case (`app`).
    pub app: String,
    /// Substring of `nsapp`, lower-case (`search`).
    pub search: String,
    /// Exact `os_type`, lower-case.
    pub os: String,
    pub sort: Sort,
}

impl RecordsQuery {
    pub fn parse(raw: &Raw<'_>) -> RecordsQuery {
        let number = |name: &str| raw.get(name).and_then(|t| t.trim().parse::<i64>().ok());
        let page = number("page").map_or(1, |p| p.clamp(1, i64::from(MAX_PAGE)) as u32);
        let limit =
            number("limit").map_or(DEFAULT_LIMIT, |l| l.clamp(1, i64::from(MAX_LIMIT)) as u32);
        RecordsQuery {
            scope: Scope::parse(raw, 1),
            page,
            limit,
            status: Filter::parse(raw.get("status"), &Status::ALL, Status::as_str),
            kind: Filter::parse(raw.get("type"), &Kind::ALL, Kind::as_str),
            app: text(raw.get("app")),
            search: text(raw.get("search")),
            os: text(raw.get("os")),
            sort: Sort::parse(raw.get("sort")),
        }
    }
}

/// Trimmed, lower-case, at most [`MAX_TEXT`] characters.
fn text(value: Option<&str>) -> String {
    value
        .map(|v| v.trim().chars().take(MAX_TEXT).collect::<String>())
        .unwrap_or_default()
        .to_lowercase()
}

/// The raw parameters of a request; the first value of each name wins, a blank value counts as absent.
pub struct Raw<'a>(pub &'a [(String, String)]);

impl<'a> Raw<'a> {
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(days: Option<&str>, default: u16, expected: u16) {
        assert_eq!(Days::parse(days, default).get(), expected, "{days:?}");
    }

    #[test]
    fn days_are_lenient() {
        check(None, 1, 1);
        check(None, 7, 7);
        check(Some("0"), 1, 365);
        check(Some("-3"), 1, 1);
        check(Some("14"), 1, 14);
        check(Some("400"), 1, 365);
        check(Some("abc"), 7, 7);
        check(Some("01"), 7, 1);
        check(Some(" 30 "), 1, 30);
        check(Some("99999999999999999999999"), 1, 1);
    }

    #[test]
    fn a_period_is_today_and_the_days_before() {
        let now = 1_700_000_000; // 2023-11-14 22:13:20 UTC
        assert_eq!(Days(1).since(now), 1_699_920_000);
        assert_eq!(Days(1).dates(now), vec!["2023-11-14".to_string()]);
        let week = Days(7).dates(now);
        assert_eq!(week.len(), 7);
        assert_eq!(week[0], "2023-11-08");
        assert_eq!(Days(365).dates(now).len(), 365);
        assert_eq!(
            [1, 7, 30, 90].map(|d| Days(d).min_installs()),
            [5, 15, 40, 100]
        );
    }

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn records_queries_are_normalized() {
        let parse = |q: &[(&str, &str)]| RecordsQuery::parse(&Raw(&pairs(q)));
        let base = parse(&[]);
        assert_eq!((base.page, base.limit, base.sort), (1, 50, Sort::DEFAULT));
        assert_eq!(base.scope.repo, RepoFilter::Is(RepoSource::ProxmoxVE));
        assert_eq!(parse(&[("limit", "0")]).limit, 1);
        assert_eq!(parse(&[("limit", "200")]).limit, 100);
        assert_eq!(parse(&[("limit", "abc")]).limit, 50);
        assert_eq!(parse(&[("page", "-2")]).page, 1);
        assert_eq!(parse(&[("sort", "bogus")]).sort, Sort::DEFAULT);
        assert_eq!(
            parse(&[("sort", "nsapp")]).sort,
            Sort {
                column: SortColumn::Nsapp,
                descending: false
            }
        );
        assert_eq!(
            parse(&[("sort", "-exit_code")]).sort,
            Sort {
                column: SortColumn::ExitCode,
                descending: true
            }
        );
        assert_eq!(parse(&[("repo", "all")]).scope.repo, RepoFilter::All);
        assert_eq!(parse(&[("repo", "gitlab")]).scope.repo, RepoFilter::Nothing);
        assert_eq!(parse(&[("status", "done")]).status, Filter::Nothing);
        assert_eq!(
            parse(&[("status", "failed")]).status,
            Filter::Is(Status::Failed)
        );
        assert_eq!(
            parse(&[("slug", "not a slug")]).scope.slug,
            SlugFilter::Nothing
        );
        // Order, zero padding and unknown names do not make another key.
        assert_eq!(
            parse(&[("days", "1"), ("repo", "ProxmoxVE")]),
            parse(&[("repo", "ProxmoxVE"), ("days", "01"), ("x", "y")])
        );
    }
}
