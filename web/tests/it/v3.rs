//! The newer scripts on the dashboard, over a small seeded set of its own (stored by the writer): `type=turnkey` is accepted wherever types are filtered and TurnKey is counted in the type
//! figures; `slug=` filters on `repo_slug` wherever `repo=` filters (every API view, the log, its CSV and
//! the pages), each figure equal to a direct count; a slug that is not `owner/repo` is a 400 naming it.

use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::harness::Stack;

const MAIN: &str = "community-scripts/ProxmoxVE";
const FORK: &str = "someuser/ProxmoxVE-fork";

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A body of install `id`: `fields` over the required ones.
fn body(id: &str, kind: &str, app: &str, fields: Value) -> Value {
    let mut value = json!({"random_id": id, "execution_id": id, "type": kind, "nsapp": app});
    for (k, v) in fields.as_object().expect("fields") {
        value[k] = v.clone();
    }
    value
}

fn accept(body: &Value, at: i64, order: u32) -> schema::Accepted {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, at as u64, order);
    schema::validate(
        body.to_string().as_bytes(),
        schema::Reception {
            event_id: Uuid::new_v7(ts),
            received_at: OffsetDateTime::from_unix_timestamp(at).expect("time"),
        },
    )
    .unwrap_or_else(|e| panic!("seed rejected: {e}: {body}"))
}

/// The installs: three TurnKey ones (two from the main repo's slug), two lxc from the main repo, one
/// arm64 lxc from a fork, one VM of an older script without a slug; spread over the last few hours.
fn events() -> Vec<schema::Accepted> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let v3 = |slug: &str, arm: bool| {
        json!({"repo_slug": slug, "has_arm": arm, "arch": if arm { "arm64" } else { "amd64" },
               "repo_source": if slug == MAIN { "ProxmoxVE" } else { "external" }, "os_type": "debian"})
    };
    // (id, type, app, slug fields, final status, exit code, duration, hours ago)
    type Seed = (
        &'static str,
        &'static str,
        &'static str,
        Value,
        &'static str,
        u8,
        u32,
        i64,
    );
    let installs: [Seed; 7] = [
        (
            "tk-1",
            "turnkey",
            "turnkey-nextcloud",
            v3(MAIN, false),
            "success",
            0,
            388,
            1,
        ),
        (
            "tk-2",
            "turnkey",
            "turnkey-nextcloud",
            v3(MAIN, false),
            "success",
            0,
            390,
            2,
        ),
        (
            "tk-3",
            "turnkey",
            "turnkey-core",
            v3(FORK, false),
            "failed",
            100,
            50,
            3,
        ),
        (
            "lxc-1",
            "lxc",
            "immich",
            v3(MAIN, false),
            "failed",
            100,
            412,
            4,
        ),
        (
            "lxc-2",
            "lxc",
            "docker",
            v3(MAIN, false),
            "success",
            0,
            120,
            5,
        ),
        (
            "arm-1",
            "lxc",
            "docker",
            v3(FORK, true),
            "success",
            0,
            96,
            6,
        ),
        (
            "vm-1",
            "vm",
            "debian13-vm",
            json!({"os_type": "debian"}),
            "success",
            0,
            200,
            7,
        ),
    ];
    let mut out = Vec::new();
    for (id, kind, app, extra, status, code, duration, hours) in installs {
        let start = now - hours * 3600;
        let mut installing = extra.clone();
        installing["status"] = json!("installing");
        installing["install_duration"] = json!(0);
        out.push(accept(&body(id, kind, app, installing), start, 0));
        let mut last = extra;
        last["status"] = json!(status);
        last["exit_code"] = json!(code);
        last["install_duration"] = json!(duration);
        if code != 0 {
            last["error"] = json!("E: Unable to correct problems, you have held broken packages.");
        }
        out.push(accept(
            &body(id, kind, app, last),
            start + i64::from(duration),
            1,
        ));
    }
    out
}

async fn stack() -> Stack {
    Stack::with(events(), 7).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnkey_is_a_type_and_slug_filters_every_view_like_repo() {
    let stack = stack().await;
    let web = stack.web(|_| {}).await;
    let count = |cond: &str| {
        stack.count(&format!(
            "SELECT count() FROM telemetry.installs_final WHERE {cond}"
        ))
    };

    // Types: TurnKey in the figures, and as a filter of the log (JSON, CSV and page).
    let d = web.json("/api/v2/dashboard?days=7").await;
    let types: Vec<(String, u64)> = d["type_stats"]
        .as_array()
        .expect("types")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                u(&c["count"]),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("lxc".to_string(), 3),
            ("turnkey".to_string(), 3),
            ("vm".to_string(), 1)
        ]
    );
    let turnkey = web.json("/api/v2/records?days=7&type=turnkey").await;
    assert_eq!(u(&turnkey["total"]), 3);
    assert_eq!(count("type = 'turnkey'"), 3);
    for r in turnkey["records"].as_array().expect("records") {
        assert_eq!(r["type"], "turnkey", "{r}");
    }
    let csv = web.text("/api/records.csv?days=7&type=turnkey").await;
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let page = web.text("/dashboard/installs?days=7&type=turnkey").await;
    assert!(
        page.contains(r#"<small data-figure="records_total">3</small>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<option value="turnkey" selected>"#),
        "{page}"
    );
    let bad = web.get("/api/v2/records?type=appliance").await;
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.expect("json");
    assert_eq!(bad["field"], "type");
    assert!(
        bad["message"]
            .as_str()
            .is_some_and(|m| m.contains("turnkey")),
        "{bad}"
    );

    // Slugs: each view of the API, against a direct count.
    for (slug, encoded) in [
        (MAIN, "community-scripts%2FProxmoxVE"),
        (FORK, "someuser/ProxmoxVE-fork"),
    ] {
        let by_slug = |cond: &str| count(&format!("repo_slug = '{slug}' AND {cond}"));
        let d = web
            .json(&format!("/api/v2/dashboard?days=7&slug={encoded}"))
            .await;
        assert_eq!(d["slug"], slug);
        assert_eq!(u(&d["total_installs"]), by_slug("1"), "{slug}");
        assert_eq!(
            u(&d["success_count"]),
            by_slug("status = 'success'"),
            "{slug}"
        );
        assert_eq!(
            u(&d["failed_count"]),
            by_slug("status = 'failed'"),
            "{slug}"
        );
        for r in d["recent_records"].as_array().expect("recent") {
            assert_eq!(r["repo_slug"], slug, "{r}");
        }
        assert_eq!(
            d["recent_records"].as_array().expect("recent").len() as u64,
            by_slug("1")
        );
        let e = web
            .json(&format!("/api/v2/errors?days=7&slug={encoded}"))
            .await;
        let failed: u64 = e["exit_codes"]
            .as_array()
            .expect("exit codes")
            .iter()
            .map(|c| u(&c["count"]))
            .sum();
        assert_eq!(failed, by_slug("status = 'failed'"), "{slug}: {e}");
        let a = web
            .json(&format!("/api/v2/apps/docker?days=7&slug={encoded}"))
            .await;
        assert_eq!(
            u(&a["total_installs"]),
            by_slug("nsapp = 'docker'"),
            "{slug}: {a}"
        );
        let r = web
            .json(&format!("/api/v2/records?days=7&slug={encoded}"))
            .await;
        assert_eq!(u(&r["total"]), by_slug("1"), "{slug}");
        let csv = web
            .text(&format!("/api/records.csv?days=7&slug={encoded}"))
            .await;
        assert_eq!(csv.lines().count() as u64, by_slug("1") + 1, "{csv}");
    }
    assert_eq!(count(&format!("repo_slug = '{MAIN}'")), 4);
    assert_eq!(count(&format!("repo_slug = '{FORK}'")), 2);
    // Slug and type together; slug and repo together.
    let r = web
        .json("/api/v2/records?days=7&type=turnkey&slug=someuser/ProxmoxVE-fork")
        .await;
    assert_eq!(u(&r["total"]), 1);
    assert_eq!(r["records"][0]["execution_id"], stack.public_id_of("tk-3"));
    let r = web
        .json("/api/v2/records?days=7&repo=ProxmoxVE&slug=someuser/ProxmoxVE-fork")
        .await;
    assert_eq!(u(&r["total"]), 0);
    // Without a slug nothing is filtered, and no slug key is answered.
    let all = web.json("/api/v2/dashboard?days=7").await;
    assert_eq!(u(&all["total_installs"]), 7);
    assert!(all.get("slug").is_none(), "{all}");

    // The detail of the fork's arm64 install shows the newer fields.
    let arm = web
        .json(&format!("/api/v2/records/{}", stack.public_id_of("arm-1")))
        .await;
    assert_eq!(
        (
            &arm["repo_slug"],
            &arm["arch"],
            &arm["has_arm"],
            &arm["install_duration"]
        ),
        (&json!(FORK), &json!("arm64"), &json!(true), &json!(96))
    );
    let vm = web
        .json(&format!("/api/records/{}", stack.public_id_of("vm-1")))
        .await;
    assert_eq!(
        (&vm["repo_slug"], &vm["has_arm"]),
        (&Value::Null, &Value::Null)
    );

    // Pages: the filter is applied, shown, and carried by the navigation links.
    let page = web
        .text("/dashboard?days=7&slug=someuser/ProxmoxVE-fork")
        .await;
    assert!(page.contains("· someuser/ProxmoxVE-fork"), "{page}");
    assert!(page.contains("slug=someuser%2FProxmoxVE-fork"), "{page}");
    assert!(
        page.contains(r#"name="slug" value="someuser/ProxmoxVE-fork""#),
        "{page}"
    );
    for path in [
        "/dashboard/errors?slug=someuser/ProxmoxVE-fork",
        "/dashboard/apps/docker?slug=someuser/ProxmoxVE-fork",
    ] {
        let page = web.text(path).await;
        assert!(page.contains("slug=someuser%2FProxmoxVE-fork"), "{path}");
    }
    let page = web
        .text("/dashboard/installs?days=7&slug=someuser/ProxmoxVE-fork")
        .await;
    assert!(
        page.contains(r#"<small data-figure="records_total">2</small>"#),
        "{page}"
    );

    // Not a slug: 400 naming it, on the API and the pages alike (never reaching SQL).
    for path in [
        "/api/v2/dashboard?slug=community-scripts",
        "/api/v2/errors?slug=a/b/c",
        "/api/v2/apps/docker?slug=a%2Fb'%20OR%201%3D1",
        "/api/v2/records?slug=https://github.com/a/b",
        "/api/records.csv?slug=a%20b/c",
        "/dashboard?slug=a/",
        "/dashboard/installs?slug=%2Fb",
    ] {
        let resp = web.get(path).await;
        assert_eq!(resp.status(), 400, "{path}");
        if path.starts_with("/api") {
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body["field"], "slug", "{path}: {body}");
        }
    }
    web.shutdown().await;
}
