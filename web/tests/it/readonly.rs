//! The web's ClickHouse user is read-only (`readonly = 2`, as `deploy/local/up` makes it): as that user
//! every write and schema change is refused, while the web, which the harness runs as that user, answers
//! its pages and API from the same tables.

use testkit::clickhouse::READONLY_USER;

use crate::harness::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_reads_as_a_user_that_cannot_write() {
    let stack = Stack::seeded().await;
    let ch = &stack.clickhouse;
    let count = |user: Option<&str>| {
        let sql = "SELECT count() FROM telemetry.events";
        match user {
            Some(user) => ch.query_as(user, sql),
            None => ch.query(sql),
        }
        .expect("count")
        .trim()
        .to_string()
    };
    let before = count(None);
    assert_eq!(
        count(Some(READONLY_USER)),
        before,
        "the read-only user reads"
    );
    for statement in [
        "INSERT INTO telemetry.events SELECT * FROM telemetry.events LIMIT 1",
        "DROP TABLE telemetry.events",
        "TRUNCATE TABLE telemetry.events",
        "ALTER TABLE telemetry.events DELETE WHERE 1",
        "CREATE TABLE telemetry.intruder (x UInt8) ENGINE = Memory",
        "CREATE DATABASE intruder",
    ] {
        let refused = ch.query_as(READONLY_USER, statement);
        assert!(refused.is_err(), "{statement}: {refused:?}");
    }
    assert_eq!(count(None), before, "nothing changed");

    let web = stack.web(|_| {}).await;
    let dashboard = web.json("/api/dashboard").await;
    assert!(dashboard.is_object(), "{dashboard}");
    let page = web.text("/dashboard").await;
    assert!(!page.is_empty());
}

/// A page of many installs with long ids: the lookup of a page's installs by id would be a SELECT over
/// 8 KB, which the `clickhouse` crate sends as a POST with `readonly=1`, refused for this user. The web
/// splits such lookups, so every page of every size answers in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_many_installs_with_long_ids_answer_in_full() {
    const INSTALLS: usize = 260;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let events = (0..INSTALLS)
        .map(|n| {
            // The longest id the contract allows (64 characters).
            let id = format!("{n:04}-{}", "x".repeat(59));
            let body = serde_json::json!({
                "random_id": id, "execution_id": id, "type": "lxc", "nsapp": "docker",
                "status": "installing", "repo_source": "ProxmoxVE"
            });
            crate::harness::accept(&body, now - 600 - n as i64, 0)
        })
        .collect();
    let stack = Stack::with(events, INSTALLS as u64).await;
    let web = stack.web(|_| {}).await;

    // Installs are listed by public id (a keyed hash of the id and the start).
    let public = |n: usize| {
        crate::harness::public_id(&format!("{n:04}-{}", "x".repeat(59)), now - 600 - n as i64)
    };
    let expected: std::collections::HashSet<String> = (0..INSTALLS).map(public).collect();

    let page = web.json("/api/v2/records?days=1&limit=500").await;
    assert_eq!(page["total"].as_u64(), Some(INSTALLS as u64), "{page}");
    let listed: Vec<String> = page["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["execution_id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(listed.len(), INSTALLS);
    assert_eq!(
        listed.into_iter().collect::<std::collections::HashSet<_>>(),
        expected,
        "every install once"
    );

    // The running service's API: at most 100 a page.
    let legacy = web.json("/api/records?days=1&limit=100").await;
    assert_eq!(legacy["total"].as_u64(), Some(INSTALLS as u64), "{legacy}");
    assert_eq!(legacy["records"].as_array().expect("records").len(), 100);

    // The installs page of the dashboard, 500 rows.
    let html = web.text("/dashboard/installs?days=1&limit=500").await;
    for n in [0, INSTALLS - 1] {
        assert!(html.contains(&public(n)), "install {n} is listed");
    }
}
