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
