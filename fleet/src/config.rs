//! What every service's configuration shares: the [`Common`] options (NATS, logs) that each `Config`
//! takes in with `#[command(flatten)]`, the one [`ConfigError`] their checks return, and [`parse`], the one
//! place where a configuration that cannot work ends the process: `telemetry-<service>: <message>` on
//! stderr and exit code [`EXIT_CONFIG`].

use clap::Parser;

use crate::LogFormat;

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
}

impl Common {
    /// Sets up the logs as configured ([`crate::init_tracing`]).
    pub fn init_tracing(&self) {
        crate::init_tracing(self.log_format, &self.log_level);
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

/// Parses a service's configuration from flags and environment and runs `check` on it. A configuration
/// clap refuses ends the process with clap's message; one `check` refuses prints
/// `telemetry-<service>: <message>` to stderr; both exit with [`EXIT_CONFIG`].
pub fn parse<C: Parser>(check: impl FnOnce(&C) -> Result<(), ConfigError>) -> C {
    let config = C::parse();
    if let Err(e) = check(&config) {
        exit(C::command().get_name(), &e);
    }
    config
}

/// Prints `<binary>: <error>` to stderr and exits with [`EXIT_CONFIG`].
pub fn exit(binary: &str, error: &ConfigError) -> ! {
    eprintln!("{binary}: {error}");
    std::process::exit(EXIT_CONFIG)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

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

    #[test]
    fn the_message_names_the_setting() {
        let e = ConfigError::new("PAGE_SIZE", "must be within 1..=500");
        assert_eq!(e.to_string(), "PAGE_SIZE must be within 1..=500");
        assert_eq!(e.setting, "PAGE_SIZE");
    }
}
