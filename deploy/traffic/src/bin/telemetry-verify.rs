//! `telemetry-verify`: compares the record of a `telemetry-simulate --record` run with what ClickHouse
//! and PocketBase hold, waiting while the writers catch up, then prints the table and exits 1 on any
//! lost or doubled event or install.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use traffic::verify::{check, ClickHouse, Ledger, PocketBase, Report};

/// Compares what the edge acknowledged (a `telemetry-simulate --record` file) with the stores.
#[derive(Debug, Parser)]
#[command(name = "telemetry-verify", version, about, long_about = None)]
struct Config {
    /// The record file of the simulation.
    #[arg(long, env = "VERIFY_RECORD")]
    record: PathBuf,
    /// ClickHouse HTTP interface.
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// ClickHouse user.
    #[arg(long, env = "CLICKHOUSE_USER", default_value = "default")]
    clickhouse_user: String,
    /// ClickHouse password (default: empty).
    #[arg(
        long,
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    clickhouse_password: String,
    /// ClickHouse database of the writer.
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = "telemetry")]
    clickhouse_database: String,
    /// PocketBase base URL; without it PocketBase is not checked.
    #[arg(long, env = "PB_URL")]
    pb_url: Option<String>,
    /// PocketBase superuser e-mail.
    #[arg(long, env = "PB_EMAIL", default_value = "")]
    pb_email: String,
    /// Password of --pb-email (default: empty).
    #[arg(
        long,
        env = "PB_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pb_password: String,
    /// PocketBase collection with one record per install.
    #[arg(long, env = "PB_TARGET_COLLECTION", default_value = "telemetry")]
    pb_collection: String,
    /// Longest wait for the stores to hold every acknowledged event, in seconds.
    #[arg(long, default_value_t = 180)]
    wait_secs: u64,
    /// Stop waiting early when nothing changed in the stores for this long, in seconds.
    #[arg(long, default_value_t = 30)]
    stable_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    match verify(&config).await {
        Ok(report) => {
            print!("{}", report.table());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("telemetry-verify: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks every 2 s until nothing acknowledged is missing, the stores stop changing, or the wait ends.
async fn verify(config: &Config) -> anyhow::Result<Report> {
    let ledger = Ledger::read(&config.record)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let clickhouse = ClickHouse {
        http: http.clone(),
        url: config.clickhouse_url.clone(),
        user: config.clickhouse_user.clone(),
        password: config.clickhouse_password.clone(),
        database: config.clickhouse_database.clone(),
    };
    let pocketbase = config.pb_url.as_ref().map(|url| PocketBase {
        http: http.clone(),
        url: url.clone(),
        email: config.pb_email.clone(),
        password: config.pb_password.clone(),
        collection: config.pb_collection.clone(),
    });
    let deadline = Instant::now() + Duration::from_secs(config.wait_secs);
    let mut last: Option<(Report, Instant)> = None;
    loop {
        let report = match check(&ledger, &clickhouse, pocketbase.as_ref()).await {
            Ok(report) => report,
            // A store still restarting: try again until the deadline.
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting: {e:#}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if report.lost() == 0 || Instant::now() >= deadline {
            return Ok(report);
        }
        let since = match &last {
            Some((before, since)) if before.rows == report.rows => *since,
            _ => Instant::now(),
        };
        if since.elapsed() >= Duration::from_secs(config.stable_secs) {
            eprintln!("the stores did not change for {}s", config.stable_secs);
            return Ok(report);
        }
        let missing: Vec<String> = report
            .rows
            .iter()
            .map(|r| format!("{} {}", r.what, r.lost))
            .collect();
        eprintln!("waiting for the writers, missing: {}", missing.join(", "));
        last = Some((report, since));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
