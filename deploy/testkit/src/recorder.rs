//! The metrics recorder of a test process. A recorder is global and can be installed once per process;
//! nextest runs each test in its own process, so every test that reads `/metrics` installs it through
//! [`recorder`], which calls the service's own install function the first time and hands out clones of
//! its handle after that. [`sample`] reads one series back from the `/metrics` text.

use std::any::Any;
use std::fmt::Debug;
use std::sync::OnceLock;

/// The process-wide recorder handle, installed by `install` on the first call:
/// `testkit::recorder(ingest::metrics::install_recorder)`. Panics when the install fails, or when a
/// later call asks for a handle of another type than the first installed.
pub fn recorder<H, E>(install: impl FnOnce() -> Result<H, E>) -> H
where
    H: Clone + Send + Sync + 'static,
    E: Debug,
{
    static HANDLE: OnceLock<Box<dyn Any + Send + Sync>> = OnceLock::new();
    HANDLE
        .get_or_init(|| Box::new(install().expect("installing the metrics recorder")))
        .downcast_ref::<H>()
        .expect("one recorder type per test process")
        .clone()
}

/// The value of a Prometheus sample line in the text format, e.g. `name{label="x"}`; 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_and_hands_out_the_same_handle() {
        let first = recorder(|| Ok::<_, ()>(String::from("handle")));
        let second = recorder(|| -> Result<String, ()> { panic!("installed twice") });
        assert_eq!((first.as_str(), second.as_str()), ("handle", "handle"));
    }

    #[test]
    fn sample_cases() {
        let text = "# HELP a_total things\na_total 3\nb{k=\"x\"} 1.5\nb{k=\"xy\"} 7\n";
        let check = |series: &str, expected: f64| {
            assert_eq!(sample(text, series), expected, "{series}");
        };
        check("a_total", 3.0);
        check("b{k=\"x\"}", 1.5);
        check("b{k=\"xy\"}", 7.0);
        check("a", 0.0);
        check("missing", 0.0);
    }
}
