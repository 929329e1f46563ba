//! How far an import is: a bar with rate and ETA on a terminal (indicatif, on stderr), else a log line
//! every few seconds with the same figures, so a run under systemd or in CI still says where it is.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::config::ProgressMode;
use super::state::Totals;

/// What the position counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Records,
    Bytes,
}

/// The progress display of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    log_every: Option<Duration>,
    last_log: Instant,
    started: Instant,
    start_position: u64,
    position: u64,
    total: Option<u64>,
    unit: Unit,
}

impl Progress {
    /// Starts at `position` (what earlier runs of the same checkpoint did) of `total`, when known.
    pub fn new(
        mode: ProgressMode,
        log_every: Duration,
        unit: Unit,
        position: u64,
        total: Option<u64>,
    ) -> Progress {
        let bar = match mode {
            ProgressMode::Bar => true,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Log | ProgressMode::Off => false,
        };
        let now = Instant::now();
        let mut progress = Progress {
            bar: None,
            log_every: (mode != ProgressMode::Off && !bar).then_some(log_every),
            last_log: now,
            started: now,
            start_position: position,
            position,
            total,
            unit,
        };
        if bar {
            progress.bar = Some(progress.make_bar());
        }
        progress
    }

    fn make_bar(&self) -> ProgressBar {
        let counts = match (self.unit, self.total.is_some()) {
            (Unit::Records, true) => {
                "[{wide_bar}] {human_pos}/{human_len} records, {per_sec}, ETA {eta}"
            }
            (Unit::Records, false) => "{human_pos} records, {per_sec}",
            (Unit::Bytes, true) => "[{wide_bar}] {bytes}/{total_bytes}, {bytes_per_sec}, ETA {eta}",
            (Unit::Bytes, false) => "{bytes}, {bytes_per_sec}",
        };
        let template = format!("{{spinner}} {{elapsed_precise}} {counts} {{msg}}");
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = match self.total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        bar.set_style(style);
        bar.set_position(self.position);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// Records the position after a stored batch and the totals so far.
    pub fn update(&mut self, position: u64, totals: &Totals) {
        self.position = position;
        if let Some(total) = self.total {
            // The source grew while we read it.
            if position > total {
                self.total = Some(position);
                if let Some(bar) = &self.bar {
                    bar.set_length(position);
                }
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(format!(
                "(written {}, rejected {})",
                totals.written,
                totals.rejected_total()
            ));
        }
        if let Some(every) = self.log_every {
            if self.last_log.elapsed() >= every {
                self.last_log = Instant::now();
                self.log(totals);
            }
        }
    }

    /// This run's rate in units per second.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (self.position - self.start_position.min(self.position)) as f64 / secs
    }

    fn log(&self, totals: &Totals) {
        let rate = self.rate();
        let unit = match self.unit {
            Unit::Records => "records",
            Unit::Bytes => "bytes",
        };
        let done = self
            .total
            .map(|t| format!("{:.1}%", 100.0 * self.position as f64 / t.max(1) as f64))
            .unwrap_or_else(|| "?".into());
        let eta = match self.total {
            Some(t) if rate > 0.0 => human_duration(Duration::from_secs_f64(
                t.saturating_sub(self.position) as f64 / rate,
            )),
            _ => "?".into(),
        };
        tracing::info!(
            read = totals.read,
            written = totals.written,
            rejected = totals.rejected_total(),
            position = self.position,
            total = ?self.total,
            done,
            rate = %format!("{rate:.0} {unit}/s"),
            eta,
            "import progress"
        );
    }

    /// Clears the bar (the report follows on stdout).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `1h02m03s`, `4m05s`, `6s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        let check = |secs: u64, expected: &str| {
            assert_eq!(human_duration(Duration::from_secs(secs)), expected)
        };
        check(0, "0s");
        check(59, "59s");
        check(65, "1m05s");
        check(3723, "1h02m03s");
    }
}
