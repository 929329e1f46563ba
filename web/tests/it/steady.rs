//! A view is computed again while the writer's settle watermark moves during its computation
//! (`Db::steady`): a read of `installs_final` that overlaps the record of a watermark can miss the
//! installs that settle took, and one during which the watermark stayed put cannot.

use std::sync::atomic::{AtomicUsize, Ordering};

use web::db::{Db, DbError, STEADY_READS};
use web::Config;

use crate::harness::Stack;

/// Records a watermark a second above the newest one, as a settle does.
fn settle(stack: &Stack) {
    stack
        .clickhouse
        .query(
            "INSERT INTO telemetry.settle_watermark (watermark, installs) \
             SELECT max(watermark) + 1, 0 FROM telemetry.settle_watermark",
        )
        .expect("record a watermark");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_read_while_a_watermark_is_recorded_is_read_again() {
    let stack = Stack::seeded().await;
    let mut config = Config::for_servers(&stack.clickhouse.url(), &stack.nats.url());
    config.clickhouse_user = testkit::clickhouse::READONLY_USER.into();
    let db = Db::new(&config);
    let installs = || stack.count("SELECT count() FROM telemetry.installs_final");
    let expected = installs();
    assert!(expected > 0, "the seed is stored");

    // The watermark stays put: one computation.
    let calls = AtomicUsize::new(0);
    let answer = db
        .steady(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, DbError>(installs())
        })
        .await
        .expect("steady read");
    assert_eq!((answer, calls.load(Ordering::SeqCst)), (expected, 1));

    // A watermark recorded during the first computation: its answer is dropped, the second is served.
    let calls = AtomicUsize::new(0);
    let answer = db
        .steady(|| async {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if call == 1 {
                settle(&stack);
            }
            Ok::<_, DbError>(call)
        })
        .await
        .expect("steady read");
    assert_eq!(answer, 2, "the answer of the computation after the record");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A watermark recorded during every computation: bounded, the last answer is served.
    let calls = AtomicUsize::new(0);
    let answer = db
        .steady(|| async {
            settle(&stack);
            Ok::<_, DbError>(calls.fetch_add(1, Ordering::SeqCst) + 1)
        })
        .await
        .expect("steady read");
    assert_eq!(answer, STEADY_READS);
    assert_eq!(calls.load(Ordering::SeqCst), STEADY_READS);

    // An error of the computation is the answer; it is not retried.
    let calls = AtomicUsize::new(0);
    let failed = db
        .steady(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<u64, _>(DbError::Timeout(std::time::Duration::from_secs(1)))
        })
        .await;
    assert!(matches!(failed, Err(DbError::Timeout(_))));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
