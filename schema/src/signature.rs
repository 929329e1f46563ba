//! Error signatures: the decisive line of an install log with everything machine-specific normalized away
//! (numbers, paths, versions, hashes, ids, addresses), so the same failure on 40 machines counts as one
//! pattern. The edge attaches it to every failed event; stores and rollups group by it.

use std::sync::LazyLock;

use regex::Regex;

/// Longest signature, in bytes.
pub const MAX_SIGNATURE_BYTES: usize = 160;

/// Words that mark a line as the one that says what went wrong, strongest first.
const DECISIVE: [&str; 16] = [
    "error:",
    "e:",
    "fatal",
    "failed",
    "failure",
    "error",
    "err!",
    "cannot",
    "can't",
    "could not",
    "unable to",
    "not found",
    "no such",
    "denied",
    "killed",
    "timed out",
];

static NOISE: LazyLock<[(Regex, &'static str); 9]> = LazyLock::new(|| {
    let re = |p: &str| Regex::new(p).expect("signature pattern");
    [
        // ANSI colour codes.
        (re(r"\x1b\[[0-9;]*[A-Za-z]"), ""),
        // URLs and paths.
        (re(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\x22)]+"), "<url>"),
        (re(r"(?:\.{0,2}/[A-Za-z0-9._@+~-]+)+/?"), "<path>"),
        // UUIDs and long hex hashes.
        (
            re(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
            "<id>",
        ),
        (re(r"\b[0-9a-fA-F]{12,}\b"), "<hash>"),
        // Masked and plain addresses.
        (re(r"\b[0-9]{1,3}(?:\.(?:x|[0-9]{1,3})){3}\b"), "<ip>"),
        // Versions (1.2, 1.2.3-1, v20.11.0, 1:2.47.2-0.2).
        (
            re(r"\bv?[0-9]+(?::[0-9]+)?(?:\.[0-9A-Za-z]+)+(?:[-+~][0-9A-Za-z.+~-]+)?"),
            "<v>",
        ),
        // Remaining numbers.
        (re(r"[0-9]+"), "<n>"),
        // Runs of blanks.
        (re(r"\s+"), " "),
    ]
});

/// The signature of an install log, or `None` when there is no text to go on.
pub fn signature(log: &str) -> Option<String> {
    let line = decisive_line(log)?;
    let mut text = line.to_string();
    for (pattern, replacement) in NOISE.iter() {
        if pattern.is_match(&text) {
            text = pattern.replace_all(&text, *replacement).into_owned();
        }
    }
    let text = text
        .trim()
        .trim_matches(|c: char| c == '-' || c == '|' || c == ':' || c == ' ');
    let text = crate::privacy::cut_at_char(text, MAX_SIGNATURE_BYTES).trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

/// The last line with the strongest error word; else the summary after `exit_code=N |` on the first line.
fn decisive_line(log: &str) -> Option<&str> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "---")
        .collect();
    let body = lines.get(1..).unwrap_or_default();
    for word in DECISIVE {
        if let Some(line) = body
            .iter()
            .rev()
            .find(|l| l.to_ascii_lowercase().contains(word))
        {
            return Some(line);
        }
    }
    let first = lines.first()?;
    Some(
        first
            .split_once('|')
            .map_or(*first, |(_, summary)| summary.trim()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(log: &str, expected: Option<&str>) {
        assert_eq!(signature(log).as_deref(), expected, "log {log:?}");
    }

    #[test]
    fn signatures_pick_the_decisive_line_and_normalize_it() {
        check(
            "exit_code=100 | APT error\n---\nSetting up x (1.2.3-1) ...\nE: Unable to locate package python3-pip",
            Some("E: Unable to locate package python<n>-pip"),
        );
        check(
            "exit_code=22 | curl: HTTP error\n---\ncurl: (22) The requested URL returned error: 404",
            Some("curl: (<n>) The requested URL returned error: <n>"),
        );
        check(
            "exit_code=1 | General error\n---\nfailed to open /var/lib/app/db-3f2b8c1e9d4a.sqlite at 10.x.x.x",
            Some("failed to open <path> at <ip>"),
        );
        check(
            "exit_code=243 | Node.js: Out of memory\n---\nnpm ERR! node v20.11.0 failed after 183 s",
            Some("npm ERR! node <v> failed after <n> s"),
        );
        check(
            "exit_code=1 | pip\n---\nCollecting numpy==1.26.4\n  Downloading numpy-1.26.4.tar.gz (15.8 MB)\nERROR: Could not find a version that satisfies the requirement torch==2.3.1 (from versions: none)\nERROR: No matching distribution found for torch==2.3.1",
            Some("ERROR: No matching distribution found for torch==<v>"),
        );
        check(
            "exit_code=150 | systemd\n---\nCreated symlink /etc/systemd/system/multi-user.target.wants/app.service.\nJob for app.service failed because the control process exited with error code.\nSee \"systemctl status app.service\" and \"journalctl -xeu app.service\" for details.",
            Some("Job for app.service failed because the control process exited with error code."),
        );
        check(
            "exit_code=130 | Aborted by user (SIGINT)",
            Some("Aborted by user (SIGINT)"),
        );
        check("", None);
        check("   \n---\n", None);
    }

    #[test]
    fn the_same_failure_on_different_machines_has_one_signature() {
        let a = signature("exit_code=100 | x\n---\nE: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4211 (apt)");
        let b = signature("exit_code=100 | x\n---\nE: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 97 (apt)");
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn signatures_are_bounded() {
        let long = format!("x\nerror: {}", "word ".repeat(200));
        assert!(signature(&long).is_some_and(|s| s.len() <= MAX_SIGNATURE_BYTES));
    }
}
