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

    /// The keys of the component schema `name`, with those of its `allOf` members.
    fn schema_keys(doc: &serde_json::Value, name: &str) -> std::collections::BTreeSet<String> {
        let schema = &doc["components"]["schemas"][name];
        assert!(schema.is_object(), "no schema {name}");
        let mut keys: std::collections::BTreeSet<String> = schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        for member in schema["allOf"].as_array().into_iter().flatten() {
            match member["$ref"].as_str() {
                Some(r) => keys.extend(schema_keys(doc, r.rsplit('/').next().unwrap_or(r))),
                None => keys.extend(
                    member["properties"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.clone()),
                ),
            }
        }
        keys
    }

    /// The models serialize exactly the keys of their schemas in the document (the integration test
    /// `openapi` checks the answers of the running web; these are the shapes it cannot reach there: the
    /// admin replies, and the models with every optional value absent).
    #[test]
    fn models_serialize_the_keys_their_schemas_name() {
        fn check(doc: &serde_json::Value, name: &str, value: impl serde::Serialize) {
            let json = serde_json::to_value(value).expect("serializes");
            let keys: std::collections::BTreeSet<String> = json
                .as_object()
                .expect("an object")
                .keys()
                .cloned()
                .collect();
            assert_eq!(keys, schema_keys(doc, name), "{name}");
        }
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi parses");
        let record = crate::model::Record {
            execution_id: "a1".into(),
            nsapp: "docker".into(),
            kind: "lxc".into(),
            status: "installing".into(),
            repo_source: "ProxmoxVE".into(),
            repo_slug: None,
            os_type: None,
            os_version: None,
            pve_version: None,
            method: None,
            exit_code: None,
            exit_description: None,
            error_category: None,
            started_at: crate::model::timestamp(0),
            finished_at: None,
            duration: None,
            core_count: None,
            ram_size: None,
            disk_size: None,
        };
        check(&doc, "Record", &record);
        check(&doc, "Timestamp", crate::model::timestamp(0));
        check(&doc, "ExitCodeInfo", &crate::model::exit_code_table()[0]);
        check(
            &doc,
            "Live",
            crate::live::Live::unavailable(crate::params::Repo::default()),
        );
        check(
            &doc,
            "AlertTest",
            schema::admin::AlertTest {
                sent: true,
                message: "sent".into(),
            },
        );
        check(
            &doc,
            "CleanupRun",
            schema::admin::CleanupRun {
                updated: 0,
                message: "none".into(),
            },
        );
        check(
            &doc,
            "CleanupStatus",
            schema::admin::CleanupStatus {
                stuck_count: 0,
                stuck_after_hours: 2.0,
                check_interval: 5.0,
                enabled: true,
            },
        );
    }
}
