//! The settle job (schema version 4): every `SETTLE_INTERVAL_SECS` it takes a new watermark
//! `now() - SETTLE_LAG_SECS` on ClickHouse's clock, merges the installs ClickHouse was touched about
//! between the current watermark and the new one from all their events into `installs_settled` (in
//! chunks by `cityHash64(execution_id)`, so a big backlog is merged a bounded slice at a time), marks
//! the installs that now have more than one settled row in `installs_resettled`, counts the rows it
//! inserted per day in `settled_blocks` (schema version 6, the rollups' change counts), and only then records
//! the new watermark. Until it is recorded, `installs_final` ignores the new rows (their version is
//! above the watermark) and still merges those installs from `events`; after it, the new rows show.
//! So `installs_final` is exact, and stays so when two settles run at once (each only ever adds rows
//! and marks; the newest row up to the watermark wins), except for a read that overlaps the record of
//! a watermark: its branches can read different watermarks (writer README, "Reads during a settle").
//! From schema version 8 it reads its installs' events, and their settled rows, only from the first
//! receipt of any of their events on (`install_first`; writer README, "A settle's reads").
//! The watermark also stays before the start of every INSERT ClickHouse is still running
//! (`system.processes`): a touch is stamped during its insert, so every touch below the watermark
//! belongs to an insert that has finished, however long it took; the lag is a floor on top of that.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet::Shutdown;
use tokio::task::JoinHandle;

use super::{schema, ChError, ClickHouseSink};

/// The start (Unix seconds, rounded down, on ClickHouse's clock) of the oldest INSERT the server is still
/// running, any table and any user it shows; `u32::MAX` when none. A touch is stamped by
/// `install_touches_mv` during its insert, so no later than the insert's start; a watermark at or below
/// this start leaves out every touch of an insert not yet finished. (No `?` in it: the client binds those.)
const INSERTING: &str = "SELECT toUInt32(if(count() = 0, 4294967295, \
min(toUInt32(now()) - toUInt32(ceil(elapsed))))) FROM system.processes \
WHERE is_initial_query AND match(lower(query), '^[[:space:]]*insert')";

/// A new watermark, and how many seconds an insert still running holds it back from `now - lag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    pub at: u32,
    pub held: u32,
}

/// The new watermark: `lag` behind ClickHouse's clock `now`, and before the start of the oldest insert
/// still running (`inserting`, `u32::MAX`: none) by a second, so that every touch below it belongs to an
/// insert that has finished, whatever the insert took.
pub fn watermark(now: u32, lag: u32, inserting: u32) -> Watermark {
    let floor = now.saturating_sub(lag);
    let at = floor.min(inserting.saturating_sub(1));
    Watermark {
        at,
        held: floor - at,
    }
}

/// A watermark held back this long by an insert still running is logged as a warning, once per insert.
const HELD_LONG_SECS: u32 = 60;

/// Records how far the current watermark trails ClickHouse's clock.
fn behind(now: u32, watermark: u32) {
    ::metrics::gauge!(crate::metrics::SETTLE_BEHIND).set(f64::from(now.saturating_sub(watermark)));
}

/// Most installs one chunk of a settle merges.
const CHUNK_INSTALLS: u64 = 200_000;

/// What one settle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The watermark recorded (Unix seconds).
    pub watermark: u32,
    /// Installs merged into `installs_settled`.
    pub installs: u64,
}

impl ClickHouseSink {
    /// One settle with watermark `now() - lag`: `None` when the watermark would not move.
    pub async fn settle(&self, lag: Duration) -> Result<Option<Settled>, ChError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Clock {
            old: u32,
            now: u32,
            inserting: u32,
        }
        let clock: Clock = self
            .client
            .query(&format!(
                "SELECT toUInt32(max(watermark)) AS old, toUInt32(now()) AS now, ({INSERTING}) AS inserting \
                 FROM ?.settle_watermark"
            ))
            .bind(clickhouse::sql::Identifier(&self.database))
            .fetch_one()
            .await?;
        let lag = u32::try_from(lag.as_secs()).unwrap_or(u32::MAX);
        let Watermark { at: new, held } = watermark(clock.now, lag, clock.inserting);
        let old = clock.old;
        // The start of the insert this settle last warned about: one warning per insert, not per settle.
        let warned = self.held_warning.load(Ordering::Relaxed);
        if held >= HELD_LONG_SECS && warned != clock.inserting {
            self.held_warning.store(clock.inserting, Ordering::Relaxed);
            tracing::warn!(
                running_secs = clock.now.saturating_sub(clock.inserting),
                "settle: an insert still running holds the watermark back; installs_final merges \
                 every install touched since from events until it ends (see system.processes)"
            );
        } else if held > 0 {
            tracing::debug!(
                watermark = new,
                inserting_since = clock.inserting,
                "settle: the watermark waits for an insert still running"
            );
        }
        if new <= old {
            behind(clock.now, old);
            return Ok(None);
        }
        let window = format!(
            "SELECT execution_id FROM ?.install_touches \
             WHERE touched_at >= toDateTime({old}) AND touched_at < toDateTime({new})"
        );
        let installs: u64 = self
            .client
            .query(&format!(
                "SELECT toUInt64(uniqExact(execution_id)) FROM ({window})"
            ))
            .bind(clickhouse::sql::Identifier(&self.database))
            .fetch_one()
            .await?;
        // The earliest start of a row this settle inserted (`u32::MAX`: none).
        let mut from = u32::MAX;
        let chunks = installs.div_ceil(CHUNK_INSTALLS).max(1);
        for chunk in 0..chunks {
            let ids = format!(
                "execution_id IN ({window} AND cityHash64(execution_id) % {chunks} = {chunk})"
            );
            if installs > 0 {
                // From schema version 8, only the days of `events` from the first receipt of these
                // installs' events on: every event touched before the new watermark belongs to an
                // insert that has finished, so `install_first` has it. An event touched since may be
                // left out; its install is merged again by the next settle, and read from `events`
                // until then, as for any event touched after the watermark.
                let events = if self.schema_at_least(8) {
                    let first = self.first_received(&ids).await?;
                    format!("received_at >= toDateTime({first}) AND {ids}")
                } else {
                    ids.clone()
                };
                self.execute(&schema::render(&format!(
                    "INSERT INTO ?.installs_settled SELECT *, toDateTime({new}) AS version FROM ({})",
                    schema::installs_of_events(&events)
                )))
                .await?;
                // Every settled row of these installs, older ones and the one just inserted, started
                // at or after the first receipt of any of their events, read after the insert (see
                // `first_received`): the reads of their rows below take only the part of
                // `installs_settled` from there on (its sorting key starts with `started_at`), not
                // every install of all time.
                let first = self.first_received(&ids).await?;
                from = from.min(first);
                let rows = format!("started_at >= toDateTime({first}) AND {ids}");
                self.execute(&format!(
                    "INSERT INTO ?.installs_resettled SELECT execution_id FROM ?.installs_settled \
                     WHERE {rows} GROUP BY execution_id HAVING count() > 1"
                ))
                .await?;
                if self.schema_at_least(7) {
                    // Re-settled installs whose start moved: `installs_final` reads them with
                    // `LIMIT 1 BY` (schema version 7).
                    self.execute(&format!(
                        "INSERT INTO ?.installs_moved SELECT execution_id FROM ?.installs_settled \
                         WHERE {rows} GROUP BY execution_id HAVING uniqExact(started_at) > 1"
                    ))
                    .await?;
                }
            }
        }
        if installs > 0 && self.schema_at_least(6) {
            // The days these rows can change (schema version 6), before they show.
            self.execute(
                &schema::SETTLED_BLOCKS_OF_SETTLE
                    .replace("{version}", &new.to_string())
                    .replace("{from}", &from.to_string()),
            )
            .await?;
        }
        self.execute(&format!(
            "INSERT INTO ?.settle_watermark (watermark, installs) VALUES (toDateTime({new}), {installs})"
        ))
        .await?;
        self.drop_old_touches(new).await?;
        behind(clock.now, new);
        Ok(Some(Settled {
            watermark: new,
            installs,
        }))
    }

    /// The first second (Unix, rounded down) at which any event of the installs `ids` selects was
    /// received, of the inserts finished so far; 0 when they have none. A settled row's `started_at`
    /// is the first receipt of some of its install's events that were stored when it was settled
    /// (rounded down the same way), and an install's events are only ever added to (retention deletes
    /// whole installs), so no row of these installs settled before this read started before it. From
    /// schema version 8 a lookup in `install_first`; before, a read of `events` by id.
    async fn first_received(&self, ids: &str) -> Result<u32, ChError> {
        let sql = if self.schema_at_least(8) {
            format!("SELECT toUInt32(intDiv(min(first_ms), 1000)) FROM ?.install_first WHERE {ids}")
        } else {
            format!("SELECT toUInt32(intDiv(min(received_ms), 1000)) FROM ?.events WHERE {ids}")
        };
        Ok(self.in_database(&sql).fetch_one().await?)
    }

    /// Marks every install with more than one settled row: the rows two upgrades racing may have copied
    /// twice (run once when the job starts; a full pass over `installs_settled`'s ids), and (schema
    /// version 7) every one of those whose start moved.
    pub async fn mark_resettled(&self) -> Result<(), ChError> {
        self.execute(schema::MARK_RESETTLED).await?;
        if self.schema_at_least(7) {
            self.execute(schema::MARK_MOVED).await?;
        }
        Ok(())
    }

    /// Drops the days of `install_touches` older than the day before the watermark's: nothing reads them.
    async fn drop_old_touches(&self, watermark: u32) -> Result<(), ChError> {
        let days: Vec<String> = self
            .client
            .query(
                "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = 'install_touches' \
                 AND active AND partition < toString(toYYYYMMDD(toDateTime(?) - 86400))",
            )
            .bind(&self.database)
            .bind(watermark)
            .fetch_all()
            .await?;
        for day in days {
            if day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()) {
                self.execute(&format!(
                    "ALTER TABLE ?.install_touches DROP PARTITION {day}"
                ))
                .await?;
            }
        }
        Ok(())
    }
}

/// How long a stopping writer waits for the settle under way to end before it aborts it.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The settle job: a settle every interval until stopped.
pub struct SettleJob {
    stop: Shutdown,
    task: JoinHandle<()>,
}

impl SettleJob {
    /// Stops the job after the settle under way, if any, has ended (at most [`STOP_GRACE`], then it is
    /// aborted). A settle stopped between its insert and its marks would leave rows a concurrent settle
    /// of the same watermark may have recorded unmarked (shown twice until a writer's next start marks
    /// them).
    pub async fn stop(self) {
        self.stop.trigger();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_GRACE, self.task).await.is_err() {
            tracing::warn!(
                grace_secs = STOP_GRACE.as_secs(),
                "settle: still running at shutdown, aborted"
            );
            abort.abort();
        }
    }
}

/// Runs a settle every `every` until stopped; a failed settle is retried at the next tick.
pub fn spawn(sink: ClickHouseSink, every: Duration, lag: Duration) -> SettleJob {
    let stop = Shutdown::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut marked = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopped.triggered() => return,
            }
            if !marked {
                match sink.mark_resettled().await {
                    Ok(()) => marked = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "settle: marking resettled installs failed, next try at the next interval");
                        continue;
                    }
                }
            }
            match sink.settle(lag).await {
                Ok(Some(s)) => {
                    ::metrics::counter!(crate::metrics::SETTLED_INSTALLS).increment(s.installs);
                    tracing::debug!(
                        watermark = s.watermark,
                        installs = s.installs,
                        "installs settled"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "settle failed, next try at the next interval")
                }
            }
        }
    });
    SettleJob { stop, task }
}

#[cfg(test)]
mod tests {
    use super::{watermark, Watermark};

    #[test]
    fn the_watermark_stays_before_every_insert_still_running() {
        let w = |at, held| Watermark { at, held };
        // No insert running: the lag alone.
        assert_eq!(watermark(1_000, 5, u32::MAX), w(995, 0));
        // An insert that started 30 s ago, longer than the lag: a second before its start.
        assert_eq!(watermark(1_000, 5, 970), w(969, 26));
        // A recent insert does not move a watermark the lag already keeps before it.
        assert_eq!(watermark(1_000, 5, 998), w(995, 0));
        // No underflow at the start of time.
        assert_eq!(watermark(3, 5, 0), w(0, 0));
    }
}
