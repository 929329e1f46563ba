//! Configuration of `telemetry-import`: one clap struct with a subcommand per source (PocketBase
//! collection, ClickHouse table, JSON-lines file), the target ClickHouse under the writer's own variable
//! names, and the checkpoint and progress options. As in the operator's env file, an empty environment
//! value means unset.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use fleet::{LogFormat, Secret};

use crate::config::parse_name;

/// Exit codes of `telemetry-import`, as `--help` shows them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  the import is complete (rejected records are counted in the report, they are not an error)
  1  the checkpoint cannot be used (unreadable, or another import's), or an unexpected error
  2  bad command line or environment
  3  the source cannot be read: unreachable past --retry-for-secs, login refused, collection or table missing
  4  the target ClickHouse cannot be written: down past --retry-for-secs, or its migrations failed
  5  interrupted by SIGINT or SIGTERM after the batch in hand was stored; the same command continues";

const ABOUT: &str = "Imports the running service's history (a PocketBase collection, a ClickHouse table of \
received events, or JSON lines) into the fleet's ClickHouse, through the edge's rules and the stores' merge.";

const LONG_ABOUT: &str = "Imports the running service's history into the fleet's ClickHouse.

Every record (or row, or line) becomes the body a script would have sent and goes through the edge's \
rules (schema::validate: repairs, normalization, reclassification, masking). The event is received at the \
record's `created` and gets an id derived from the record's id, so importing again writes identical rows \
and changes no figure. After every batch ClickHouse confirmed, a checkpoint (--state) records where the \
import stands: a killed import continues from it when started again with the same command; a finished \
one picks up only records created since. --restart reads the source from the start.

Progress: a bar with rate and ETA on a terminal, otherwise a log line every --progress-secs. At the end a \
report on stdout: records read, installs imported, events written, duplicates merged (events of an \
install already imported), and records rejected by kind (e.g. invalid_field:nsapp).";

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal (stderr), log lines otherwise.
    Auto,
    Bar,
    Log,
    Off,
}

/// The configuration of `telemetry-import`.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-import", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXIT_CODES)]
pub struct ImportConfig {
    #[command(subcommand)]
    pub source: SourceArgs,

    /// Checkpoint file, rewritten after every stored batch; `<file>.installs` lies beside it
    /// [default: ./telemetry-import-<source>.state.json; none when reading stdin].
    #[arg(long, env = "IMPORT_STATE", global = true)]
    pub state: Option<PathBuf>,

    /// Ignore the checkpoint and read the source from the start (rows stored before are written again,
    /// unchanged).
    #[arg(long, global = true)]
    pub restart: bool,

    /// Events per write to ClickHouse, and so per checkpoint.
    #[arg(long, env = "IMPORT_BATCH_SIZE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=200_000), global = true)]
    pub batch_size: u32,

    /// How long a source or target that is down is retried before the import gives up (exit 3 or 4),
    /// in seconds.
    #[arg(
        long,
        env = "IMPORT_RETRY_FOR_SECS",
        default_value_t = 300,
        global = true
    )]
    pub retry_for_secs: u64,

    /// Progress: auto (a bar with rate and ETA on a terminal, else log lines), bar, log or off.
    #[arg(long, env = "IMPORT_PROGRESS", value_enum, default_value_t = ProgressMode::Auto, global = true)]
    pub progress: ProgressMode,

    /// Seconds between progress log lines (when not showing a bar).
    #[arg(long, env = "IMPORT_PROGRESS_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub progress_secs: u64,

    /// Also write the final report as JSON to this file.
    #[arg(long, env = "IMPORT_REPORT_JSON", global = true)]
    pub report_json: Option<PathBuf>,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Log format: text for people, json for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `writer=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

/// The fleet's ClickHouse, under the writer's variable names.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The fleet's ClickHouse HTTP interface to import into.
    #[arg(
        long,
        env = "CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123",
        global = true
    )]
    pub clickhouse_url: String,

    /// User of the fleet's ClickHouse.
    #[arg(
        long,
        env = "CLICKHOUSE_USER",
        default_value = "default",
        global = true
    )]
    pub clickhouse_user: String,

    /// Password of the fleet's ClickHouse (default: empty).
    #[arg(
        long,
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true,
        global = true
    )]
    pub clickhouse_password: Secret,

    /// Database of the fleet's tables; created and migrated like the writer does.
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = "telemetry", value_parser = parse_name, global = true)]
    pub clickhouse_database: String,

    /// Deadline of one write to ClickHouse, in seconds; a slower write counts as ClickHouse down.
    #[arg(long, env = "WRITE_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub write_timeout_secs: u64,
}

/// Where the history comes from.
#[derive(Debug, Clone, Subcommand)]
pub enum SourceArgs {
    /// A PocketBase collection of the running service: one record per install, read in pages sorted by
    /// `created,id`; each record becomes one event with its status.
    #[command(after_help = EXIT_CODES)]
    Pocketbase(PocketBaseArgs),
    /// A ClickHouse table of received events (one row per event, retried duplicates included), read in
    /// streamed key ranges sorted by (`created`, `id`); every row becomes an event.
    #[command(after_help = EXIT_CODES)]
    Clickhouse(ClickHouseArgs),
    /// JSON lines, one record or event per line, each with `created` (or `received_at`): a string time
    /// or Unix seconds. Its `id` (or `event_id`) names it, else the line itself does.
    #[command(after_help = EXIT_CODES)]
    File(FileArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PocketBaseArgs {
    /// PocketBase base URL, e.g. http://127.0.0.1:8090 (http; run next to the source).
    #[arg(long)]
    pub url: String,

    /// The collection with one record per install.
    #[arg(long, default_value = "telemetry", value_parser = parse_name)]
    pub collection: String,

    /// Auth collection of PB_IDENTITY (`_superusers`, or a users collection allowed to list the records).
    #[arg(long, env = "PB_AUTH_COLLECTION", default_value = "_superusers", value_parser = parse_name)]
    pub auth_collection: String,

    /// E-mail (or username) to log in with; empty: read without logging in (the collection's list rule
    /// must then allow it).
    #[arg(
        long,
        env = "PB_IDENTITY",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub identity: String,

    /// Password of PB_IDENTITY; prefer the environment to the flag (default: empty).
    #[arg(
        long,
        env = "PB_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub password: Secret,

    /// Records per page (PocketBase's maximum is 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,

    /// When the collection has no index on `created`, add one on (created, id) first (needs a
    /// superuser). Without it every page scans the whole collection.
    #[arg(long)]
    pub create_index: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ClickHouseArgs {
    /// The source ClickHouse HTTP interface, e.g. http://old-host:8123.
    #[arg(long)]
    pub url: String,

    /// The table of received events, as `database.table`.
    #[arg(long, default_value = "telemetry_db.telemetry", value_parser = parse_table)]
    pub table: TableName,

    /// User of the source ClickHouse (read-only is enough).
    #[arg(long, env = "SOURCE_CLICKHOUSE_USER", default_value = "default")]
    pub user: String,

    /// Password of the source ClickHouse (default: empty).
    #[arg(
        long,
        env = "SOURCE_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub password: Secret,

    /// Rows per source query: each query streams one key range of at most this many rows.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub chunk_rows: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// The JSON-lines file; `-` reads stdin (which cannot be resumed, so it keeps no checkpoint).
    pub path: PathBuf,
}

/// A `database.table` name whose parts are plain identifiers; reaches SQL only as bound identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub database: String,
    pub table: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.database, self.table)
    }
}

/// `database.table`, each part letters, digits and `_` (starting with a letter or `_`).
pub fn parse_table(text: &str) -> Result<TableName, String> {
    let (database, table) = text
        .split_once('.')
        .ok_or_else(|| "must be database.table".to_string())?;
    Ok(TableName {
        database: parse_name(database).map_err(|e| format!("database {e}"))?,
        table: parse_name(table).map_err(|e| format!("table {e}"))?,
    })
}

/// A URL without user and password, for logs, reports and the checkpoint.
pub fn redact_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl SourceArgs {
    /// What names this source in the checkpoint: an import continues only from its own.
    pub fn key(&self) -> String {
        match self {
            SourceArgs::Pocketbase(a) => {
                format!(
                    "pocketbase {} collection {}",
                    redact_url(&a.url),
                    a.collection
                )
            }
            SourceArgs::Clickhouse(a) => {
                format!("clickhouse {} table {}", redact_url(&a.url), a.table)
            }
            SourceArgs::File(a) => format!("file {}", a.path.display()),
        }
    }

    /// True when reading stdin.
    pub fn is_stdin(&self) -> bool {
        matches!(self, SourceArgs::File(a) if a.path.as_os_str() == "-")
    }

    /// The checkpoint file when `--state` is not given, in the current directory.
    pub fn default_state(&self) -> Option<PathBuf> {
        let name = match self {
            SourceArgs::Pocketbase(a) => format!("pocketbase-{}", a.collection),
            SourceArgs::Clickhouse(a) => format!("clickhouse-{}", a.table),
            SourceArgs::File(_) if self.is_stdin() => return None,
            SourceArgs::File(a) => {
                let stem = a
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "input".into());
                format!("file-{stem}")
            }
        };
        Some(PathBuf::from(format!("telemetry-import-{name}.state.json")))
    }
}

impl ImportConfig {
    /// Parses the command line and the environment; an empty variable counts as unset. Exits with code
    /// 2 and a message on a bad command line.
    pub fn parse_args() -> ImportConfig {
        ImportConfig::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Like [`ImportConfig::parse_args`], for given arguments.
    pub fn try_parse_args<I, T>(args: I) -> Result<ImportConfig, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = ImportConfig::command()
            .mut_args(unset_when_empty)
            .mut_subcommands(|sub| sub.mut_args(unset_when_empty));
        let matches = command.try_get_matches_from(args)?;
        ImportConfig::from_arg_matches(&matches)
    }

    /// The checkpoint file: `--state`, else the source's default; none for stdin.
    pub fn state_path(&self) -> Option<PathBuf> {
        if self.source.is_stdin() {
            return None;
        }
        self.state.clone().or_else(|| self.source.default_state())
    }

    pub fn retry_for(&self) -> Duration {
        Duration::from_secs(self.retry_for_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.target.write_timeout_secs.max(1))
    }

    /// The settings of the writer's ClickHouse sink for the target.
    pub fn sink_settings(&self) -> crate::clickhouse::Settings {
        crate::clickhouse::Settings {
            url: self.target.clickhouse_url.clone(),
            user: self.target.clickhouse_user.clone(),
            password: self.target.clickhouse_password.clone(),
            database: self.target.clickhouse_database.clone(),
            write_timeout: self.write_timeout(),
            migrate_to: 0,
        }
    }
}

/// An argument whose variable is set but empty reads as if the variable were not set.
fn unset_when_empty(arg: Arg) -> Arg {
    let empty = arg
        .get_env()
        .and_then(std::env::var_os)
        .is_some_and(|value| value.is_empty());
    if empty {
        arg.env(None::<&'static str>)
    } else {
        arg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ImportConfig, String> {
        ImportConfig::try_parse_args(
            std::iter::once("telemetry-import").chain(args.iter().copied()),
        )
        .map_err(|e| e.kind().to_string())
    }

    #[test]
    fn each_source_parses_with_its_defaults() {
        let config = parse(&["pocketbase", "--url", "http://pb:8090"]).expect("pocketbase");
        let SourceArgs::Pocketbase(pb) = &config.source else {
            panic!("{config:?}")
        };
        assert_eq!(
            (pb.collection.as_str(), pb.page_size, config.batch_size),
            ("telemetry", 1000, 10_000)
        );
        assert_eq!(
            config.state_path(),
            Some(PathBuf::from(
                "telemetry-import-pocketbase-telemetry.state.json"
            ))
        );
        let config = parse(&["clickhouse", "--url", "http://old:8123", "--restart"]).expect("ch");
        let SourceArgs::Clickhouse(ch) = &config.source else {
            panic!("{config:?}")
        };
        assert_eq!(ch.table.to_string(), "telemetry_db.telemetry");
        assert!(config.restart);
        let config = parse(&["file", "-"]).expect("stdin");
        assert_eq!(config.state_path(), None);
        let config = parse(&["file", "dir/dump.jsonl", "--state", "s.json"]).expect("file");
        assert_eq!(config.state_path(), Some(PathBuf::from("s.json")));
        assert_eq!(config.source.key(), "file dir/dump.jsonl");
    }

    #[test]
    fn bad_names_and_sizes_are_refused() {
        let check = |args: &[&str]| assert!(parse(args).is_err(), "{args:?}");
        check(&["clickhouse", "--url", "u", "--table", "telemetry"]);
        check(&["clickhouse", "--url", "u", "--table", "db.t; DROP TABLE x"]);
        check(&["clickhouse", "--url", "u", "--table", "db.`t`"]);
        check(&["pocketbase", "--url", "u", "--collection", "a/b"]);
        check(&["pocketbase", "--url", "u", "--page-size", "5000"]);
        check(&["pocketbase"]);
        check(&["file"]);
    }

    #[test]
    fn tables_are_two_identifiers() {
        let check = |text: &str, expected: Option<(&str, &str)>| {
            let got = parse_table(text).ok();
            let got = got
                .as_ref()
                .map(|t| (t.database.as_str(), t.table.as_str()));
            assert_eq!(got, expected, "{text}");
        };
        check(
            "telemetry_db.telemetry",
            Some(("telemetry_db", "telemetry")),
        );
        check("a.b.c", None);
        check(".b", None);
        check("a.", None);
        check("a.b-c", None);
    }

    #[test]
    fn urls_lose_their_credentials() {
        let check = |url: &str, expected: &str| assert_eq!(redact_url(url), expected, "{url}");
        check("http://user:pw@host:8123/", "http://host:8123");
        check("http://host:8090", "http://host:8090");
        check("host", "host");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let config = parse(&["clickhouse", "--url", "u", "--password", "hunter2-src"]).expect("ch");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
