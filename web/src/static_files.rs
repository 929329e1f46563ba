//! The static files (stylesheet, scripts, the vendored Chart.js, the OpenAPI document), embedded in the
//! binary so that the web needs no files at run time and loads nothing from another host. They are served
//! under `/static/` with a one-year cache; pages link them with `?v=<content hash>`, so a new build is
//! fetched at once.

use std::sync::OnceLock;

/// One embedded file.
pub struct StaticFile {
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every file under `/static/`.
pub const FILES: &[StaticFile] = &[
    StaticFile {
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../static/app.css"),
    },
    StaticFile {
        path: "theme.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../static/theme.js"),
    },
    StaticFile {
        path: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../static/dashboard.js"),
    },
    StaticFile {
        path: "refresh.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../static/refresh.js"),
    },
    StaticFile {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../static/favicon.svg"),
    },
    // Chart.js 4.6.1 (MIT), `dist/chart.umd.min.js` of the npm package, unchanged; see static/vendor/.
    StaticFile {
        path: "vendor/chart.umd.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../static/vendor/chart.umd.min.js"),
    },
    StaticFile {
        path: "vendor/chart.js.LICENSE.md",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../static/vendor/chart.js.LICENSE.md"),
    },
];

/// The OpenAPI document of the JSON API (served at `/api/openapi.json`).
pub const OPENAPI: &str = include_str!("../static/openapi.json");

pub fn get(path: &str) -> Option<&'static StaticFile> {
    FILES.iter().find(|f| f.path == path)
}

/// A short hash of every embedded file (FNV-1a), the `?v=` of static links.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for file in FILES {
            for b in file.bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{:012x}", hash & 0xffff_ffff_ffff)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_embedded_and_reference_no_other_host() {
        assert!(get("vendor/chart.umd.min.js").is_some_and(|f| f.bytes.len() > 100_000));
        let chart = std::str::from_utf8(get("vendor/chart.umd.min.js").expect("chart").bytes)
            .expect("utf-8");
        assert!(
            chart.starts_with("/*!\n * Chart.js v4.6.1"),
            "license header kept"
        );
        for name in ["app.css", "theme.js", "dashboard.js", "refresh.js"] {
            let text = std::str::from_utf8(get(name).expect(name).bytes).expect("utf-8");
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{name}"
            );
        }
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi parses");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(version().len(), 12);
    }
}
