//! Secrets stay secret, and example passwords are refused: every binary's `--help`, run with every
//! password and token variable set to a marker, shows no marker; every service started with a
//! placeholder password (`change-me`, `password`, ...) in one of its secrets exits 2 naming the setting.

use std::process::Command;

/// Every binary of the workspace.
const BINARIES: [&str; 11] = [
    "telemetry-ingest",
    "telemetry-writer",
    "telemetry-aggregator",
    "telemetry-alerter",
    "telemetry-web",
    "telemetry-import",
    "telemetry-simulate",
    "telemetry-verify",
    "telemetry-loadgen",
    "telemetry-fill",
    "telemetry-fresh",
];

/// Every variable that holds a password or token, in any binary.
const SECRETS: [&str; 7] = [
    "NATS_PASSWORD",
    "CLICKHOUSE_PASSWORD",
    "SOURCE_CLICKHOUSE_PASSWORD",
    "PB_PASSWORD",
    "SMTP_PASSWORD",
    "ADMIN_PASSWORD",
    "GITHUB_TOKEN",
];

const MARKER: &str = "Mk7secretMarkerQ2";

fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(testkit::bin_path(binary))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn no_help_shows_a_secret_value() {
    let env: Vec<(&str, &str)> = SECRETS.iter().map(|name| (*name, MARKER)).collect();
    for binary in BINARIES {
        for help in [&["--help"][..], &["-h"][..]] {
            let (code, text) = run(binary, help, &env);
            assert_eq!(code, Some(0), "{binary} {help:?}: {text}");
            assert!(
                !text.contains(MARKER),
                "{binary} {help:?} shows a secret:\n{text}"
            );
        }
    }
    // telemetry-import's subcommands have their own help.
    for sub in ["pocketbase", "clickhouse", "file"] {
        let (code, text) = run("telemetry-import", &[sub, "--help"], &env);
        assert_eq!(code, Some(0), "telemetry-import {sub} --help: {text}");
        assert!(
            !text.contains(MARKER),
            "telemetry-import {sub} --help:\n{text}"
        );
    }
}

/// A service binary, the secrets it reads, and what else it needs to get as far as its check.
type ServiceSecrets = (
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

/// Each service and the secrets it reads.
const SERVICE_SECRETS: [ServiceSecrets; 5] = [
    ("telemetry-ingest", &["NATS_PASSWORD"], &[]),
    (
        "telemetry-writer",
        &["NATS_PASSWORD", "CLICKHOUSE_PASSWORD", "PB_PASSWORD"],
        &[
            ("PB_EMAIL", "admin@example.org"),
            ("PB_PASSWORD", "Zq7vX2kP9mL4"),
        ],
    ),
    ("telemetry-aggregator", &["NATS_PASSWORD"], &[]),
    (
        "telemetry-alerter",
        &["NATS_PASSWORD", "SMTP_PASSWORD"],
        &[
            ("SMTP_USER", "telemetry"),
            ("SMTP_PASSWORD", "Zq7vX2kP9mL4"),
        ],
    ),
    (
        "telemetry-web",
        &["NATS_PASSWORD", "CLICKHOUSE_PASSWORD", "ADMIN_PASSWORD"],
        &[],
    ),
];

#[test]
fn every_service_refuses_placeholder_passwords() {
    for (binary, secrets, base) in SERVICE_SECRETS {
        for secret in secrets {
            for placeholder in [
                "changeme",
                "CHANGE_ME",
                "change-me-too",
                "password",
                "secret",
            ] {
                let mut env = base.to_vec();
                env.push(("NATS_USER", "svc"));
                env.push(("NATS_PASSWORD", "Zq7vX2kP9mL4"));
                env.retain(|(k, _)| k != secret);
                env.push((secret, placeholder));
                let (code, text) = run(binary, &[], &env);
                assert_eq!(
                    code,
                    Some(2),
                    "{binary} with {secret}={placeholder}: {text}"
                );
                assert!(
                    text.contains(&format!("{binary}: {secret} is a placeholder")),
                    "{binary} with {secret}={placeholder}: {text}"
                );
                if placeholder.contains(['-', '_']) {
                    assert!(
                        !text.contains(placeholder),
                        "{binary} echoes the value: {text}"
                    );
                }
            }
        }
    }
}
