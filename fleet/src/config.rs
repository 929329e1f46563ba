//! What every service's configuration shares: the [`Common`] options (NATS, logs) that each `Config`
//! takes in with `#[command(flatten)]`, the one [`ConfigError`] their checks return, and [`parse`], the one
//! place where a configuration that cannot work ends the process: `telemetry-<service>: <message>` on
//! stderr and exit code [`EXIT_CONFIG`].
//!
//! It is also where the running service's env file meets the fleet. [`parse`] reads the environment as
//! that file means it: a variable set to nothing (or blanks) is unset, so the setting keeps its default;
//! an operator's name that stands for one of ours ([`Alias`], e.g. `PB_IDENTITY` for `PB_EMAIL`) fills
//! our setting when ours is unset, converted to our unit; and [`OPERATOR_NAMES`], one table of every name
//! of that file with the services that read it, gives the start-up report ([`OperatorReport`]): which of
//! those names a service read, which it ignores and why. Values are never logged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Command, Parser};

use crate::{LogFormat, Secret};

/// Exit code of a service whose configuration cannot work. clap exits with the same code for an unknown
/// flag or a value it cannot parse, so every configuration problem ends a service with 2.
pub const EXIT_CONFIG: i32 = 2;

/// The options every service has, with the same names, env vars and defaults.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Common {
    /// NATS server URL(s), comma-separated for a cluster.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Log format: text for people, json for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `info,async_nats=warn`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// What [`parse`] found of the operator's env file; logged by [`Common::init_tracing`].
    #[arg(skip)]
    pub operator: OperatorReport,

    /// NATS user of this service, with NATS_PASSWORD (each service has its own, see deploy/nats);
    /// empty: no login.
    #[arg(long, env = "NATS_USER", default_value = "")]
    pub nats_user: String,

    /// Password of NATS_USER (never printed).
    #[arg(
        long,
        env = "NATS_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub nats_password: Secret,

    /// NATS credentials file (a `.creds` file: user JWT and NKey seed), instead of NATS_USER and
    /// NATS_PASSWORD.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// CA certificate (PEM) that signed the NATS servers' certificates; when set, the connection must
    /// use TLS.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
}

impl Common {
    /// Rejects NATS login settings that cannot work: a user without a password (or the reverse), both a
    /// user and a credentials file, a placeholder password.
    pub fn check(&self) -> Result<(), ConfigError> {
        match (self.nats_user.is_empty(), self.nats_password.is_empty()) {
            (false, true) => {
                return Err(ConfigError::new(
                    "NATS_PASSWORD",
                    "is empty but NATS_USER is set",
                ))
            }
            (true, false) => {
                return Err(ConfigError::new(
                    "NATS_USER",
                    "is empty but NATS_PASSWORD is set",
                ))
            }
            _ => {}
        }
        if !self.nats_user.is_empty() && self.nats_creds.is_some() {
            return Err(ConfigError::new(
                "NATS_CREDS",
                "and NATS_USER are both set: log in with one of them",
            ));
        }
        refuse_placeholder("NATS_PASSWORD", &self.nats_password)
    }

    /// How [`crate::nats::connect_with`] logs in and checks the servers, from these settings.
    pub fn nats_auth(&self) -> crate::nats::Auth {
        crate::nats::Auth {
            user: (!self.nats_user.is_empty())
                .then(|| (self.nats_user.clone(), self.nats_password.clone())),
            creds: self.nats_creds.clone(),
            tls_ca: self.nats_tls_ca.clone(),
        }
    }

    /// Connects to NATS as configured ([`crate::nats::connect_with`]), naming the connection `name`.
    pub async fn connect_nats(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        crate::nats::connect_with(&self.nats_url, &self.nats_auth(), name).await
    }

    /// Sets up the logs as configured ([`crate::init_tracing`]), then logs the start-up report of the
    /// operator's names ([`OperatorReport::log`]) once.
    pub fn init_tracing(&self) {
        crate::init_tracing(self.log_format, &self.log_level);
        self.operator.log();
    }
}

/// A setting that cannot work, or settings that cannot work together. The message starts with the
/// setting's env var and says what is wrong, e.g. `PAGE_SIZE must be within 1..=500`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {problem}")]
pub struct ConfigError {
    /// The env var at fault (or the ones that conflict, e.g. `PB_EMAIL and PB_PASSWORD`).
    pub setting: &'static str,
    /// What is wrong, as the rest of the sentence: `must be at least 1`.
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            setting,
            problem: problem.into(),
        }
    }
}

/// A service's `Config`, as [`parse`] needs it: the operator's names it reads for settings of its own,
/// and where its [`Common`] block is.
pub trait Service: Parser {
    /// The operator's names that stand for settings of this service (see [`Alias`]).
    const ALIASES: &'static [Alias] = &[];

    fn common_mut(&mut self) -> &mut Common;
}

/// Turns the operator's value into the syntax of our setting; `Err` says what is wrong with it. Gets
/// the environment for values that depend on another setting.
pub type Convert = fn(&str, &Env) -> Result<String, String>;

/// An operator's name that stands for one of our settings. When our env var is unset and theirs is set,
/// theirs fills ours (converted to our unit); when both are set, ours wins and a warning says so.
#[derive(Debug, Clone, Copy)]
pub struct Alias {
    /// Our env var, e.g. `PB_EMAIL`.
    pub ours: &'static str,
    /// The running service's, e.g. `PB_IDENTITY`.
    pub theirs: &'static str,
    /// From their value to ours ([`same`] when meaning and unit agree).
    pub convert: Convert,
}

impl Alias {
    /// An operator's name with the same meaning and unit as ours.
    pub const fn same(ours: &'static str, theirs: &'static str) -> Alias {
        Alias {
            ours,
            theirs,
            convert: same,
        }
    }
}

/// The value as it is.
pub fn same(value: &str, _: &Env) -> Result<String, String> {
    Ok(value.to_string())
}

/// A number of minutes (fractions allowed) as whole milliseconds.
pub fn minutes_as_ms(value: &str, _: &Env) -> Result<String, String> {
    scaled(value, 60_000.0, "minutes")
}

/// A number of hours (fractions allowed) as whole seconds.
pub fn hours_as_secs(value: &str, _: &Env) -> Result<String, String> {
    scaled(value, 3600.0, "hours")
}

fn scaled(value: &str, factor: f64, unit: &str) -> Result<String, String> {
    let n: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("must be a number of {unit}, got {value:?}"))?;
    let scaled = (n * factor).round();
    if !(1.0..=1e15).contains(&scaled) {
        return Err(format!(
            "must be a positive number of {unit}, got {value:?}"
        ));
    }
    Ok(format!("{scaled:.0}"))
}

/// A boolean as the running service wrote them (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any
/// case).
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" | "t" => Ok(true),
        "false" | "0" | "no" | "n" | "off" | "f" => Ok(false),
        _ => Err(format!("must be true or false, got {value:?}")),
    }
}

/// The environment as the services read it: a variable set to nothing or to blanks counts as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    set: BTreeMap<String, String>,
    blank: BTreeSet<String>,
}

impl Env {
    /// This process's environment (variables whose name or value is not UTF-8 are left to clap).
    pub fn from_process() -> Env {
        Env::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        let mut env = Env::default();
        for (name, value) in pairs {
            let (name, value) = (name.into(), value.into());
            if value.trim().is_empty() {
                env.set.remove(&name);
                env.blank.insert(name);
            } else {
                env.blank.remove(&name);
                env.set.insert(name, value);
            }
        }
        env
    }

    /// The value of `name` when it is set to something.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.set.get(name).map(String::as_str)
    }

    /// True when `name` is present with an empty or blank value.
    pub fn is_blank(&self, name: &str) -> bool {
        self.blank.contains(name)
    }
}

/// Parses a service's configuration from flags and environment and runs `check` on it. The environment
/// is read as the operator's env file means it ([`prepare`]: blank = unset, their names for ours). A
/// configuration clap refuses ends the process with clap's message; one `check` or a conversion refuses
/// prints `telemetry-<service>: <message>` to stderr; both exit with [`EXIT_CONFIG`].
pub fn parse<C: Service>(check: impl FnOnce(&C) -> Result<(), ConfigError>) -> C {
    let base = C::command();
    let binary = base.get_name().to_string();
    let env = Env::from_process();
    let (mut command, report) = match prepare(base, C::ALIASES, &env) {
        Ok(prepared) => prepared,
        Err(e) => exit(&binary, &e),
    };
    let matches = command.clone().get_matches();
    let mut config =
        C::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
    if let Err(e) = config.common_mut().check().and_then(|()| check(&config)) {
        exit(&binary, &e);
    }
    config.common_mut().operator = report;
    config
}

/// The command with the environment read as the operator's env file means it: options whose env var is
/// blank lose it (so they keep their default), and an alias whose name is set fills our option when ours
/// is not (as its default, converted). Returns what the start-up report says. `--help` lists the aliases.
pub fn prepare(
    command: Command,
    aliases: &[Alias],
    env: &Env,
) -> Result<(Command, OperatorReport), ConfigError> {
    let binary = command.get_name().to_string();
    let by_env: BTreeMap<String, clap::Id> = command
        .get_arguments()
        .filter_map(|a| Some((a.get_env()?.to_str()?.to_string(), a.get_id().clone())))
        .collect();
    let mut command = command;
    for (name, id) in &by_env {
        if env.is_blank(name) {
            command = command.mut_arg(id, |a| a.env(None::<&'static str>));
        }
    }
    let mut report = OperatorReport::default();
    for alias in aliases {
        debug_assert!(
            by_env.contains_key(alias.ours),
            "{binary} has no option with env {}",
            alias.ours
        );
        let Some(id) = by_env.get(alias.ours) else {
            continue;
        };
        match (env.get(alias.ours), env.get(alias.theirs)) {
            (Some(_), Some(_)) => report.overridden.push((alias.ours, alias.theirs)),
            (None, Some(value)) => {
                let value =
                    (alias.convert)(value, env).map_err(|p| ConfigError::new(alias.theirs, p))?;
                // Leaked once per process and alias: clap keeps its defaults as `&'static str`.
                let value: &'static str = Box::leak(value.into_boxed_str());
                // A secret's value (hidden in the env line) must not show as the default either.
                command = command.mut_arg(id, |a| {
                    let hide = a.is_hide_env_values_set();
                    a.default_value(value).hide_default_value(hide)
                });
                report.mapped.push((alias.theirs, alias.ours));
            }
            _ => {}
        }
    }
    let mut reads: BTreeSet<&'static str> = aliases.iter().map(|a| a.theirs).collect();
    reads.extend(
        OPERATOR_NAMES
            .iter()
            .map(|n| n.name)
            .filter(|n| by_env.contains_key(*n)),
    );
    for name in OPERATOR_NAMES {
        if env.get(name.name).is_none() {
            continue;
        }
        if reads.contains(name.name) {
            report.read.push(name.name);
        } else {
            report.ignored.push((name.name, name.why_not()));
        }
    }
    if !aliases.is_empty() {
        let mut help = String::from(
            "The running service's env file: these names are read too (ours win when both are set):\n",
        );
        for alias in aliases {
            help.push_str(&format!("  {:<26} as {}\n", alias.theirs, alias.ours));
        }
        command = command.after_long_help(Box::leak(help.into_boxed_str()) as &'static str);
    }
    Ok((command, report))
}

/// Refuses a password or token that is one of the example files' stand-ins ([`crate::secret::is_placeholder`]:
/// `changeme`, `change-me`, `password`, `admin`, `secret`, `example`, ...): a service started with the
/// example's value would run with a password anyone can read. The message names the setting, never the
/// value. An empty secret (unset) passes; whether it is needed is the service's check.
pub fn refuse_placeholder(setting: &'static str, secret: &Secret) -> Result<(), ConfigError> {
    if crate::secret::is_placeholder(secret.expose()) {
        return Err(ConfigError::new(
            setting,
            "is a placeholder password from an example file: set a real one",
        ));
    }
    Ok(())
}

/// Prints `<binary>: <error>` to stderr and exits with [`EXIT_CONFIG`].
pub fn exit(binary: &str, error: &ConfigError) -> ! {
    eprintln!("{binary}: {error}");
    std::process::exit(EXIT_CONFIG)
}

/// A listen address: `:PORT` (every interface, as the running service wrote it), `HOST:PORT` with an IP
/// address or `localhost`, or `[IPv6]:PORT`.
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let bad =
        || format!("{text:?} is not an address to listen on: use :PORT, HOST:PORT or [IPv6]:PORT");
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse().map_err(|_| bad())
}

/// One name of the running service's env file and the binaries of the fleet that read it.
#[derive(Debug, Clone, Copy)]
pub struct OperatorName {
    pub name: &'static str,
    /// The binaries that read it, under this name or as the alias of one of theirs.
    pub readers: &'static [&'static str],
    /// Why the others do not read it: added to "read by …"; the whole reason when no binary reads it.
    pub note: &'static str,
}

impl OperatorName {
    /// What a service that does not read it says about it.
    pub fn why_not(&self) -> String {
        match (self.readers, self.note) {
            ([], note) => note.to_string(),
            (readers, "") => format!("read by {}", readers.join(", ")),
            (readers, note) => format!("read by {}: {note}", readers.join(", ")),
        }
    }
}

const INGEST: &str = "telemetry-ingest";
const WRITER: &str = "telemetry-writer";
const AGGREGATOR: &str = "telemetry-aggregator";
const ALERTER: &str = "telemetry-alerter";
const WEB: &str = "telemetry-web";

/// Every name of the running service's env file, in its order, and who reads it here.
pub const OPERATOR_NAMES: &[OperatorName] = &[
    OperatorName {
        name: "LISTEN_ADDR",
        readers: &[INGEST],
        note: "the edge's address; the web's is WEB_LISTEN_ADDR",
    },
    OperatorName {
        name: "TRUSTED_PROXIES_CIDR",
        readers: &[INGEST],
        note: "",
    },
    OperatorName {
        name: "PB_URL",
        readers: &[WRITER],
        note: "",
    },
    OperatorName {
        name: "PB_AUTH_COLLECTION",
        readers: &[WRITER],
        note: "",
    },
    OperatorName {
        name: "PB_IDENTITY",
        readers: &[WRITER],
        note: "",
    },
    OperatorName {
        name: "PB_PASSWORD",
        readers: &[WRITER],
        note: "",
    },
    OperatorName {
        name: "PB_TARGET_COLLECTION",
        readers: &[WRITER],
        note: "",
    },
    OperatorName {
        name: "MAX_BODY_BYTES",
        readers: &[INGEST],
        note: "",
    },
    OperatorName {
        name: "RATE_LIMIT_RPM",
        readers: &[INGEST],
        note: "",
    },
    OperatorName {
        name: "RATE_BURST",
        readers: &[INGEST],
        note: "",
    },
    OperatorName {
        name: "RATE_KEY_MODE",
        readers: &[INGEST],
        note: "",
    },
    OperatorName {
        name: "RATE_KEY_HEADER",
        readers: &[INGEST],
        note: "",
    },
    OperatorName {
        name: "UPSTREAM_TIMEOUT_MS",
        readers: &[INGEST],
        note: "the wait for the broker's ack",
    },
    OperatorName {
        name: "ENABLE_REQUEST_LOGGING",
        readers: &[],
        note: "requests are never logged (privacy)",
    },
    OperatorName {
        name: "ENABLE_CACHE",
        readers: &[WEB],
        note: "",
    },
    OperatorName {
        name: "CACHE_TTL_SECONDS",
        readers: &[WEB],
        note: "",
    },
    OperatorName {
        name: "ENABLE_REDIS",
        readers: &[],
        note: "not needed: the fleet's cache is in-process",
    },
    OperatorName {
        name: "REDIS_URL",
        readers: &[],
        note: "not needed: the fleet's cache is in-process",
    },
    OperatorName {
        name: "ALERT_ENABLED",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "SMTP_HOST",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "SMTP_PORT",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "SMTP_USER",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "SMTP_PASSWORD",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "SMTP_FROM",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "SMTP_TO",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "SMTP_USE_TLS",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "ALERT_FAILURE_THRESHOLD",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "ALERT_CHECK_INTERVAL_MIN",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "ALERT_COOLDOWN_MIN",
        readers: &[ALERTER],
        note: "",
    },
    OperatorName {
        name: "CLEANUP_ENABLED",
        readers: &[AGGREGATOR],
        note: "stuck installs are timed out by the aggregator",
    },
    OperatorName {
        name: "CLEANUP_INTERVAL_MIN",
        readers: &[AGGREGATOR],
        note: "",
    },
    OperatorName {
        name: "CLEANUP_STUCK_HOURS",
        readers: &[AGGREGATOR],
        note: "",
    },
    OperatorName {
        name: "RETENTION_ENABLED",
        readers: &[WRITER],
        note: "",
    },
    OperatorName {
        name: "RETENTION_DAYS",
        readers: &[WRITER],
        note: "",
    },
    OperatorName {
        name: "ADMIN_PASSWORD",
        readers: &[WEB],
        note: "",
    },
    OperatorName {
        name: "GITHUB_TOKEN",
        readers: &[WEB],
        note: "",
    },
    OperatorName {
        name: "GITHUB_OWNER",
        readers: &[WEB],
        note: "",
    },
    OperatorName {
        name: "GITHUB_REPO",
        readers: &[WEB],
        note: "",
    },
];

/// The operator's names `command` (with its `aliases`) reads: the names of [`OPERATOR_NAMES`] among its
/// env vars, and the aliases'. A service's tests compare it with the readers of the table.
pub fn operator_names_read(command: &Command, aliases: &[Alias]) -> BTreeSet<&'static str> {
    let envs: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| Some(a.get_env()?.to_str()?.to_string()))
        .collect();
    OPERATOR_NAMES
        .iter()
        .map(|n| n.name)
        .filter(|n| envs.contains(*n) || aliases.iter().any(|a| a.theirs == *n))
        .collect()
}

/// The operator's names the table says `binary` reads.
pub fn operator_names_of(binary: &str) -> BTreeSet<&'static str> {
    OPERATOR_NAMES
        .iter()
        .filter(|n| n.readers.contains(&binary))
        .map(|n| n.name)
        .collect()
}

/// What a service found of the operator's env file at start. Names only, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorReport {
    /// The operator's names set in the environment that this service reads.
    pub read: Vec<&'static str>,
    /// Those it does not read, each with the reason.
    pub ignored: Vec<(&'static str, String)>,
    /// Aliases that filled one of our settings: (theirs, ours).
    pub mapped: Vec<(&'static str, &'static str)>,
    /// Aliases set together with our own name, which wins: (ours, theirs).
    pub overridden: Vec<(&'static str, &'static str)>,
}

impl OperatorReport {
    /// One info line when any of the operator's names is set (which it reads, which it ignores and
    /// why, which stand for ours), and a warning per alias that lost to our own name.
    pub fn log(&self) {
        for (ours, theirs) in &self.overridden {
            tracing::warn!(
                setting = ours,
                ignored = theirs,
                "{ours} and {theirs} are both set; {ours} wins"
            );
        }
        if self.read.is_empty() && self.ignored.is_empty() {
            return;
        }
        tracing::info!(
            read = %self.read.join(", "),
            ignored = %self.ignored_text(),
            mapped = %self.mapped_text(),
            "operator env file: names read and ignored"
        );
    }

    /// `NAME (reason); NAME (reason)`.
    pub fn ignored_text(&self) -> String {
        let items: Vec<String> = self
            .ignored
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        items.join("; ")
    }

    /// `THEIRS as OURS, …`.
    pub fn mapped_text(&self) -> String {
        let items: Vec<String> = self
            .mapped
            .iter()
            .map(|(theirs, ours)| format!("{theirs} as {ours}"))
            .collect();
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    #[derive(Debug, Parser)]
    #[command(name = "telemetry-test")]
    struct Service {
        #[command(flatten)]
        common: Common,
    }

    /// Env var and default of the option `id`, as clap will show and apply them.
    fn check_option(id: &str, env: &str, default: &str) {
        let command = Service::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("no option {id}"));
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env), "{id}");
        let defaults: Vec<_> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        assert_eq!(defaults, [default], "{id}");
    }

    #[test]
    fn every_option_keeps_its_env_var_and_default() {
        check_option("nats_url", "NATS_URL", "nats://127.0.0.1:4222");
        check_option("log_format", "LOG_FORMAT", "text");
        check_option("log_level", "LOG_LEVEL", "info");
    }

    /// Parses flags (every option given, so the environment of the test cannot change the outcome).
    fn check(args: &[&str], expected: Result<Common, ErrorKind>) {
        let parsed =
            Service::try_parse_from(std::iter::once("telemetry-test").chain(args.iter().copied()))
                .map(|s| s.common)
                .map_err(|e| e.kind());
        assert_eq!(parsed, expected, "{args:?}");
    }

    #[test]
    fn flags_are_parsed() {
        let common = |url: &str, format, level: &str| Common {
            nats_url: url.into(),
            log_format: format,
            log_level: level.into(),
            operator: OperatorReport::default(),
            nats_user: String::new(),
            nats_password: Secret::default(),
            nats_creds: None,
            nats_tls_ca: None,
        };
        check(
            &[
                "--nats-url",
                "nats://a:4222,nats://b:4222",
                "--log-format",
                "json",
                "--log-level",
                "info,async_nats=warn",
            ],
            Ok(common(
                "nats://a:4222,nats://b:4222",
                LogFormat::Json,
                "info,async_nats=warn",
            )),
        );
        check(
            &[
                "--nats-url",
                "nats://x:1",
                "--log-format",
                "text",
                "--log-level",
                "warn",
            ],
            Ok(common("nats://x:1", LogFormat::Text, "warn")),
        );
        check(
            &[
                "--nats-url",
                "nats://x:1",
                "--log-format",
                "yaml",
                "--log-level",
                "warn",
            ],
            Err(ErrorKind::InvalidValue),
        );
        check(&["--nats"], Err(ErrorKind::UnknownArgument));
    }

    #[test]
    fn help_shows_env_vars_and_defaults() {
        let help = Service::command().render_long_help().to_string();
        for expected in [
            "--nats-url <NATS_URL>",
            "[env: NATS_URL=",
            "[default: nats://127.0.0.1:4222]",
            "[env: LOG_FORMAT=",
            "[default: text]",
            "[env: LOG_LEVEL=",
            "[default: info]",
        ] {
            assert!(help.contains(expected), "{expected} missing from:\n{help}");
        }
    }

    /// The NATS login settings [`Common::check`] refuses (`Err(setting)`) or takes.
    fn check_login(args: &[&str], expected: Result<(), &str>) {
        let common =
            Service::try_parse_from(std::iter::once("telemetry-test").chain(args.iter().copied()))
                .expect("parses")
                .common;
        assert_eq!(common.check().map_err(|e| e.setting), expected, "{args:?}");
    }

    #[test]
    fn nats_logins_that_cannot_work_are_refused() {
        check_login(&[], Ok(()));
        check_login(
            &["--nats-user", "ingest", "--nats-password", "Zq7vX2kP9m"],
            Ok(()),
        );
        check_login(&["--nats-creds", "/etc/ingest.creds"], Ok(()));
        check_login(&["--nats-user", "ingest"], Err("NATS_PASSWORD"));
        check_login(&["--nats-password", "Zq7vX2kP9m"], Err("NATS_USER"));
        check_login(
            &["--nats-user", "ingest", "--nats-password", "changeme"],
            Err("NATS_PASSWORD"),
        );
        check_login(
            &[
                "--nats-user",
                "i",
                "--nats-password",
                "Zq7vX2kP9m",
                "--nats-creds",
                "/c",
            ],
            Err("NATS_CREDS"),
        );
    }

    #[test]
    fn the_nats_password_is_never_printed() {
        let common = Service::try_parse_from([
            "telemetry-test",
            "--nats-user",
            "web",
            "--nats-password",
            "hunter2-nats",
        ])
        .expect("parses")
        .common;
        assert_eq!(common.nats_password.expose(), "hunter2-nats");
        assert!(!format!("{common:?}").contains("hunter2"), "{common:?}");
        assert!(!format!("{:?}", common.nats_auth()).contains("hunter2"));
        let help = Service::command().render_long_help().to_string();
        assert!(help.contains("[env: NATS_PASSWORD]"), "{help}");
    }

    #[test]
    fn placeholders_are_refused_by_name_without_their_value() {
        let e =
            refuse_placeholder("PB_PASSWORD", &Secret::new("change-me-too")).expect_err("refused");
        assert_eq!(e.setting, "PB_PASSWORD");
        assert!(!e.to_string().contains("change-me-too"), "{e}");
        assert!(refuse_placeholder("PB_PASSWORD", &Secret::new("Zq7vX2kP9m")).is_ok());
        assert!(refuse_placeholder("PB_PASSWORD", &Secret::default()).is_ok());
    }

    #[test]
    fn the_message_names_the_setting() {
        let e = ConfigError::new("PAGE_SIZE", "must be within 1..=500");
        assert_eq!(e.to_string(), "PAGE_SIZE must be within 1..=500");
        assert_eq!(e.setting, "PAGE_SIZE");
    }

    /// A service with options under env vars no other test or process sets.
    #[derive(Debug, Parser)]
    #[command(name = "telemetry-test")]
    struct Aliased {
        #[arg(long, env = "FLEET_TEST_INTERVAL_MS", default_value_t = 1000)]
        interval_ms: u64,
        #[arg(long, env = "FLEET_TEST_EMAIL", default_value = "")]
        email: String,
    }

    /// Options whose env var one test sets in the process environment (each its own).
    #[derive(Debug, Parser)]
    #[command(name = "telemetry-test")]
    struct FromProcess {
        #[arg(long, env = "FLEET_TEST_BLANK_PORT", default_value_t = 7)]
        port: u16,
        #[arg(long, env = "FLEET_TEST_RETENTION_DAYS", default_value_t = 365)]
        retention_days: u32,
    }

    const ALIASES: &[Alias] = &[
        Alias::same("FLEET_TEST_EMAIL", "FLEET_TEST_IDENTITY"),
        Alias {
            ours: "FLEET_TEST_INTERVAL_MS",
            theirs: "FLEET_TEST_INTERVAL_MIN",
            convert: minutes_as_ms,
        },
    ];

    /// Parses `Aliased` with no flags, the environment read as `env` says.
    fn parse_with(env: &[(&str, &str)]) -> Result<(Aliased, OperatorReport), String> {
        let env = Env::from_pairs(env.iter().copied());
        let (command, report) =
            prepare(Aliased::command(), ALIASES, &env).map_err(|e| e.to_string())?;
        let matches = command
            .try_get_matches_from(["telemetry-test"])
            .map_err(|e| e.kind().to_string())?;
        let parsed = Aliased::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        Ok((parsed, report))
    }

    #[test]
    fn a_blank_value_is_unset() {
        // The only test that sets this variable; clap itself would refuse the blank as a port.
        std::env::set_var("FLEET_TEST_BLANK_PORT", " ");
        let env = Env::from_process();
        assert!(env.is_blank("FLEET_TEST_BLANK_PORT"));
        let refused = FromProcess::try_parse_from(["telemetry-test"]).map(|p| p.port);
        assert_eq!(
            refused.map_err(|e| e.kind()),
            Err(ErrorKind::ValueValidation)
        );
        let (command, _) = prepare(FromProcess::command(), &[], &env).expect("prepare");
        let matches = command
            .try_get_matches_from(["telemetry-test"])
            .expect("parses");
        let parsed = FromProcess::from_arg_matches(&matches).expect("parsed");
        assert_eq!(parsed.port, 7);
        let env = Env::from_pairs([("A", ""), ("B", "\t "), ("C", "x")]);
        assert_eq!(
            (env.get("A"), env.get("B"), env.get("C")),
            (None, None, Some("x"))
        );
        assert!(env.is_blank("A") && env.is_blank("B") && !env.is_blank("C"));
    }

    #[test]
    fn their_names_fill_ours_and_ours_win() {
        let check =
            |env: &[(&str, &str)], email: &str, interval: u64, mapped: usize, overridden: usize| {
                let (parsed, report) = parse_with(env).expect("parses");
                assert_eq!(
                    (parsed.email.as_str(), parsed.interval_ms),
                    (email, interval),
                    "{env:?}"
                );
                assert_eq!(
                    (report.mapped.len(), report.overridden.len()),
                    (mapped, overridden),
                    "{env:?}"
                );
            };
        check(&[], "", 1000, 0, 0);
        check(
            &[("FLEET_TEST_IDENTITY", "ops@example.org")],
            "ops@example.org",
            1000,
            1,
            0,
        );
        check(&[("FLEET_TEST_INTERVAL_MIN", "0.5")], "", 30_000, 1, 0);
        check(&[("FLEET_TEST_INTERVAL_MIN", "5")], "", 300_000, 1, 0);
        // Blank theirs is unset too.
        check(&[("FLEET_TEST_IDENTITY", "")], "", 1000, 0, 0);
        assert_eq!(
            parse_with(&[("FLEET_TEST_INTERVAL_MIN", "soon")]).map(|_| ()),
            Err("FLEET_TEST_INTERVAL_MIN must be a number of minutes, got \"soon\"".into())
        );
        assert!(parse_with(&[("FLEET_TEST_INTERVAL_MIN", "-1")]).is_err());
    }

    #[test]
    fn when_both_are_set_ours_wins() {
        // Ours comes from the process environment, which only this test sets.
        std::env::set_var("FLEET_TEST_RETENTION_DAYS", "30");
        let aliases = [Alias::same("FLEET_TEST_RETENTION_DAYS", "FLEET_TEST_DAYS")];
        let process = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let env =
            Env::from_pairs(process.chain([("FLEET_TEST_DAYS".to_string(), "90".to_string())]));
        let (command, report) = prepare(FromProcess::command(), &aliases, &env).expect("prepare");
        let matches = command
            .try_get_matches_from(["telemetry-test"])
            .expect("parses");
        let parsed = FromProcess::from_arg_matches(&matches).expect("parsed");
        assert_eq!(parsed.retention_days, 30);
        assert_eq!(
            report.overridden,
            [("FLEET_TEST_RETENTION_DAYS", "FLEET_TEST_DAYS")]
        );
        assert!(report.mapped.is_empty());
    }

    #[test]
    fn help_lists_the_aliases() {
        let env = Env::default();
        let (mut command, _) = prepare(Aliased::command(), ALIASES, &env).expect("prepare");
        let help = command.render_long_help().to_string();
        assert!(help.contains("FLEET_TEST_IDENTITY"), "{help}");
        assert!(help.contains("as FLEET_TEST_INTERVAL_MS"), "{help}");
    }

    #[test]
    fn listen_addresses() {
        let check = |text: &str, expected: Option<&str>| {
            let got = listen_addr(text).ok();
            let expected = expected.map(|e| e.parse::<SocketAddr>().expect("test address"));
            assert_eq!(got, expected, "{text:?}");
        };
        check(":8080", Some("0.0.0.0:8080"));
        check("0.0.0.0:8080", Some("0.0.0.0:8080"));
        check("127.0.0.1:0", Some("127.0.0.1:0"));
        check("localhost:9101", Some("127.0.0.1:9101"));
        check("[::]:8081", Some("[::]:8081"));
        check("[::1]:1", Some("[::1]:1"));
        check(" :8080 ", Some("0.0.0.0:8080"));
        check(":", None);
        check(":http", None);
        check(":70000", None);
        check("8080", None);
        check("example.org:80", None);
        check("::1:80", None);
        check("", None);
    }

    #[test]
    fn booleans() {
        let check = |text: &str, expected: Option<bool>| {
            assert_eq!(boolean(text).ok(), expected, "{text:?}")
        };
        for yes in ["true", "TRUE", "True", "1", "yes", "on", "t"] {
            check(yes, Some(true));
        }
        for no in ["false", "False", "0", "no", "off", "f"] {
            check(no, Some(false));
        }
        check("maybe", None);
        check("", None);
    }

    /// The names of the running service's env file, as its documentation lists them.
    const THE_ENV_FILE: &[&str] = &[
        "LISTEN_ADDR",
        "TRUSTED_PROXIES_CIDR",
        "PB_URL",
        "PB_AUTH_COLLECTION",
        "PB_IDENTITY",
        "PB_PASSWORD",
        "PB_TARGET_COLLECTION",
        "MAX_BODY_BYTES",
        "RATE_LIMIT_RPM",
        "RATE_BURST",
        "RATE_KEY_MODE",
        "RATE_KEY_HEADER",
        "UPSTREAM_TIMEOUT_MS",
        "ENABLE_REQUEST_LOGGING",
        "ENABLE_CACHE",
        "CACHE_TTL_SECONDS",
        "ENABLE_REDIS",
        "REDIS_URL",
        "ALERT_ENABLED",
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_USER",
        "SMTP_PASSWORD",
        "SMTP_FROM",
        "SMTP_TO",
        "SMTP_USE_TLS",
        "ALERT_FAILURE_THRESHOLD",
        "ALERT_CHECK_INTERVAL_MIN",
        "ALERT_COOLDOWN_MIN",
        "CLEANUP_ENABLED",
        "CLEANUP_INTERVAL_MIN",
        "CLEANUP_STUCK_HOURS",
        "RETENTION_ENABLED",
        "RETENTION_DAYS",
        "ADMIN_PASSWORD",
        "GITHUB_TOKEN",
        "GITHUB_OWNER",
        "GITHUB_REPO",
    ];

    #[test]
    fn the_table_has_every_name_with_a_reader_or_a_reason() {
        let table: Vec<&str> = OPERATOR_NAMES.iter().map(|n| n.name).collect();
        assert_eq!(table, THE_ENV_FILE);
        let binaries = [INGEST, WRITER, AGGREGATOR, ALERTER, WEB];
        for name in OPERATOR_NAMES {
            assert!(
                !name.readers.is_empty() || !name.note.is_empty(),
                "{} has neither",
                name.name
            );
            assert!(
                name.readers.iter().all(|r| binaries.contains(r)),
                "{}",
                name.name
            );
            assert!(!name.why_not().is_empty(), "{}", name.name);
        }
        // Every service reads some of them, and together they read all but those with a reason.
        for binary in binaries {
            assert!(!operator_names_of(binary).is_empty(), "{binary}");
        }
    }

    #[test]
    fn the_report_names_what_is_ignored_and_why_never_values() {
        let env = Env::from_pairs([
            ("FLEET_TEST_IDENTITY", "ops@example.org"),
            ("PB_URL", "http://pb.internal:8090"),
            ("ADMIN_PASSWORD", "hunter2"),
            ("ENABLE_REDIS", "false"),
            ("REDIS_URL", ""),
            ("LISTEN_ADDR", ":8080"),
        ]);
        let (_, report) = prepare(Aliased::command(), ALIASES, &env).expect("prepare");
        assert_eq!(report.read, Vec::<&str>::new());
        let ignored: Vec<&str> = report.ignored.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            ignored,
            ["LISTEN_ADDR", "PB_URL", "ENABLE_REDIS", "ADMIN_PASSWORD"]
        );
        let text = report.ignored_text();
        assert!(
            text.contains("ENABLE_REDIS (not needed: the fleet's cache is in-process)"),
            "{text}"
        );
        assert!(
            text.contains("ADMIN_PASSWORD (read by telemetry-web)"),
            "{text}"
        );
        assert!(text.contains("PB_URL (read by telemetry-writer)"), "{text}");
        assert!(
            text.contains("LISTEN_ADDR (read by telemetry-ingest: the edge's address"),
            "{text}"
        );
        assert_eq!(
            report.mapped_text(),
            "FLEET_TEST_IDENTITY as FLEET_TEST_EMAIL"
        );
        for value in ["hunter2", "pb.internal", "ops@example.org", ":8080"] {
            assert!(!format!("{report:?}").contains(value), "{value}");
        }
    }
}
