//! The payload corpus (`schema/fixtures/payloads`: bodies the scripts really send, good and broken) by
//! file name, and a builder of small event bodies for tests that make up their own installs.

use std::path::PathBuf;

/// The execution and random ids that occur in the corpus files (see [`read_as`]).
const CORPUS_IDS: [&str; 8] = [
    "3f2b8c1e-9d4a-4b7e-8c21-6a5f0e9d7b12",
    "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "b7e1f0a2-44c3-4d5e-9f60-1a2b3c4d5e6f",
    "0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f",
    "5e4d3c2b-1a09-4f8e-a7d6-c5b4a3928170",
    // The newer scripts' files (v3_*).
    "5b1f0c7e-3a2d-4f6b-9c1e-7d8a2b4c6e01",
    "9e4d2a10-77c3-4c5e-8f0a-2b6d9e1c3f47",
    "c2a8e6f4-1b3d-4e5f-a6b7-c8d9e0f1a2b3",
];

/// The folder of the corpus.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema/fixtures/payloads")
}

/// The names of the corpus files (`*.json`), sorted.
pub fn names() -> Vec<String> {
    let dir = dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The bytes of one corpus file, e.g. `read("01_lxc_installing.json")`.
pub fn read(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A corpus file with its ids replaced by `id`, so that each use is an install of its own.
pub fn read_as(name: &str, id: &str) -> Vec<u8> {
    CORPUS_IDS.iter().fold(read(name), |body, known| {
        replace(&body, known.as_bytes(), id.as_bytes())
    })
}

/// Every order of `0..n` (all permutations), for tests that deliver an install's events in each order.
pub fn orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for rest in orders(n - 1) {
        for at in 0..=rest.len() {
            let mut order = rest.clone();
            order.insert(at, n - 1);
            out.push(order);
        }
    }
    out
}

/// One event body of install `exec` (random id `r-<exec>`, type lxc): `extra` is appended to the
/// object as it is, e.g. `,"exit_code":100`.
pub fn body(exec: &str, app: &str, status: &str, extra: &str) -> String {
    format!(
        r#"{{"random_id":"r-{exec}","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"{status}"{extra}}}"#
    )
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_reads_the_corpus() {
        let names = names();
        assert!(
            names.contains(&"01_lxc_installing.json".to_string()),
            "{names:?}"
        );
        assert!(names.iter().all(|n| !read(n).is_empty()));
    }

    #[test]
    fn read_as_replaces_every_known_id() {
        let body = String::from_utf8(read_as("01_lxc_installing.json", "mine")).expect("utf-8");
        assert!(body.contains("\"mine\""), "{body}");
        assert!(CORPUS_IDS.iter().all(|id| !body.contains(id)), "{body}");
    }

    #[test]
    fn replace_cases() {
        let check = |haystack: &str, expected: &str| {
            let got = replace(haystack.as_bytes(), b"ab", b"X");
            assert_eq!(
                String::from_utf8(got).expect("utf-8"),
                expected,
                "{haystack}"
            );
        };
        check("", "");
        check("ab", "X");
        check("aab-abb", "aX-Xb");
        check("a", "a");
    }

    #[test]
    fn body_is_json() {
        let value: serde_json::Value =
            serde_json::from_str(&body("e-1", "docker", "failed", r#","exit_code":100"#))
                .expect("json");
        assert_eq!(value["exit_code"], 100);
        assert_eq!(value["random_id"], "r-e-1");
    }
}
