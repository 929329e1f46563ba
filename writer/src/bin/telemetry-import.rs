//! `telemetry-import`: parses its configuration, sets up logs, runs the import until the source's end or
//! SIGTERM/Ctrl+C, prints the report on stdout (and as JSON with `--report-json`), and exits with the
//! code of how it ended (see `--help`).

use std::process::ExitCode;

use writer::import::{self, ImportConfig};

fn main() -> ExitCode {
    let config = ImportConfig::parse_args();
    fleet::init_tracing(config.log_format, &config.log_level);
    let report_json = config.report_json.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let finished = runtime.block_on(import::run(config, fleet::shutdown::signal()));
    print!("{}", finished.report);
    if let Some(path) = report_json {
        let json = serde_json::to_vec_pretty(&finished.report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, json) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the report");
        }
    }
    if let Some(error) = &finished.error {
        tracing::error!(error = %error, "import stopped");
    }
    ExitCode::from(finished.exit_code())
}
