//! The ClickHouse tables as versioned migrations, in SQL that ClickHouse 18.16 and current releases both
//! accept (no TTL, DateTime64, Map, JSON type or server-side parameters). `?` stands for the database
//! identifier, bound by the client; `{score}` for the status score of contract §6, generated from
//! `schema::merge::status_score` so the SQL cannot drift from the Rust merge.
//!
//! How the merge of `schema::merge` is mirrored: every rule there is "keep the candidate with the
//! smallest key", so each field of `installs` is an `argMin` state whose key is a string that sorts like
//! the Rust key: the event id in its canonical lower-case form sorts like the UUID itself, and a one-digit
//! prefix ranks candidates before the id (status: 4 - score; fields: 0 known, 1 weak `unknown`, 2 absent;
//! outcome: only finals, by status). Absent values are stored as a sentinel (`-1`, `''`) inside the state
//! and turned back into NULL by `installs_final`. `argMin`, `min`, `max` and `uniqExact` states are
//! idempotent, so a redelivered batch or a second replica changes nothing that `installs_final` shows.
//!
//! Version 2 (the newer scripts' `repo_slug`, `has_arm`, `arch`, and the install duration of the deciding
//! final, else the largest any event carried) adds columns to the tables of version 1. Rows written
//! before it hold the empty state in the new columns, which every new column reads as "absent": strings
//! are `''`, the largest duration is stored plus one (so the empty state's 0 is absent), and the deciding
//! final's duration counts only when that final was written since version 2 (its `received_ms`, kept
//! beside it, equals the one of the final that decided `installs_final`). An install whose deciding final
//! was written before version 2 keeps its figures: its duration is still the first one reported (the rule
//! of version 1), whatever arrives later.

use schema::merge::status_score;
use schema::Status;

/// One schema version: steps applied in order, each idempotent, so that a migration interrupted half-way
/// (or run by two writers at once) can run again.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub steps: &'static [Step],
}

/// One step of a migration.
pub enum Step {
    /// A statement that is idempotent by its own words (`IF NOT EXISTS`, `IF EXISTS`).
    Sql(&'static str),
    /// A statement built from this module's constants by a function (a view that embeds another constant).
    Built(fn() -> String),
    /// `ALTER TABLE ?.<table> ADD COLUMN <column> <ty>`, run only while `system.columns` lacks the column
    /// (ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`).
    AddColumn {
        table: &'static str,
        column: &'static str,
        ty: &'static str,
    },
    /// A statement run only while `when` (a count over `system.tables` of this crate's constants, every
    /// `?` the database's name as a string) is above zero: what 18.16 cannot make idempotent by its own
    /// words (`RENAME TABLE`, a copy into a table about to be swapped in).
    When {
        when: &'static str,
        sql: &'static str,
    },
}

impl Step {
    /// The statement to run: only constants of this module reach the text.
    pub fn sql(&self) -> String {
        match self {
            Step::Sql(statement) => render(statement),
            Step::Built(build) => render(&build()),
            Step::AddColumn { table, column, ty } => {
                format!("ALTER TABLE ?.{table} ADD COLUMN {column} {ty}")
            }
            Step::When { sql, .. } => render(sql),
        }
    }
}

/// The bookkeeping table, created before anything else.
pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS ?.schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree ORDER BY version";

/// Every version, oldest first. Never edit a released one: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events, installs, installs_mv, installs_final, events_final",
        steps: &[
            Step::Sql(EVENTS),
            Step::Sql(INSTALLS),
            Step::Sql(INSTALLS_MV),
            Step::Sql(INSTALLS_FINAL),
            Step::Sql(EVENTS_FINAL),
        ],
    },
    Migration {
        version: 2,
        name: "repo_slug, has_arm, arch; install duration of the deciding final (installs_mv2)",
        steps: V2,
    },
    Migration {
        version: 3,
        name: "installs_by_random_id, installs_mv3: an install shows only its first random_id's events",
        steps: V3,
    },
    Migration {
        version: 4,
        name: "installs_settled, install_touches, settle_watermark: installs_final reads settled rows",
        steps: V4,
    },
    Migration {
        version: 5,
        name: "installs_settled ordered by (started_at, execution_id): a period reads its own rows",
        steps: V5,
    },
    Migration {
        version: 6,
        name: "settled_blocks, day_rollups, day_rollup_index: per-day rollups of the dashboards' passes",
        steps: V6,
    },
    Migration {
        version: 7,
        name: "installs_moved: a period reads its own re-settled installs, not every one of all time",
        steps: V7,
    },
    Migration {
        version: 8,
        name: "install_first: a settle reads its installs' events from their first day, not all of them",
        steps: V8,
    },
];

/// One row per accepted event. A redelivered event is a second copy with the same sorting key, which
/// ReplacingMergeTree folds away when parts merge; readers use `events_final` (or `FINAL`) meanwhile.
const EVENTS: &str = "CREATE TABLE IF NOT EXISTS ?.events (
    event_id UUID,
    received_at DateTime,
    received_ms UInt64,
    execution_id String,
    random_id String,
    type String,
    nsapp String,
    status String,
    ct_type Nullable(UInt8),
    disk_size Nullable(UInt32),
    core_count Nullable(UInt16),
    ram_size Nullable(UInt32),
    os_type Nullable(String),
    os_version Nullable(String),
    pve_version Nullable(String),
    method Nullable(String),
    exit_code Nullable(UInt8),
    error Nullable(String),
    error_category Nullable(String),
    error_signature Nullable(String),
    install_duration Nullable(UInt32),
    cpu_vendor Nullable(String),
    cpu_model Nullable(String),
    gpu_vendor Nullable(String),
    gpu_model Nullable(String),
    gpu_passthrough Nullable(String),
    ram_speed Nullable(String),
    repo_source String,
    synthetic UInt8,
    rescued Array(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (execution_id, event_id)";

/// Partial install states, one row per (install, day, inserted block); merged by `installs_final`.
const INSTALLS: &str = "CREATE TABLE IF NOT EXISTS ?.installs (
    day Date,
    execution_id String,
    random_id_state AggregateFunction(argMin, String, String),
    type_state AggregateFunction(argMin, String, String),
    nsapp_state AggregateFunction(argMin, String, String),
    repo_source_state AggregateFunction(argMin, String, String),
    status_state AggregateFunction(argMin, String, String),
    final_state AggregateFunction(max, UInt8),
    finished_ms_state AggregateFunction(argMin, UInt64, String),
    exit_code_state AggregateFunction(argMin, Int64, String),
    error_state AggregateFunction(argMin, String, String),
    error_category_state AggregateFunction(argMin, String, String),
    error_signature_state AggregateFunction(argMin, String, String),
    first_ms_state AggregateFunction(min, UInt64),
    last_ms_state AggregateFunction(max, UInt64),
    ct_type_state AggregateFunction(argMin, Int64, String),
    disk_size_state AggregateFunction(argMin, Int64, String),
    core_count_state AggregateFunction(argMin, Int64, String),
    ram_size_state AggregateFunction(argMin, Int64, String),
    install_duration_state AggregateFunction(argMin, Int64, String),
    os_type_state AggregateFunction(argMin, String, String),
    os_version_state AggregateFunction(argMin, String, String),
    pve_version_state AggregateFunction(argMin, String, String),
    method_state AggregateFunction(argMin, String, String),
    cpu_vendor_state AggregateFunction(argMin, String, String),
    cpu_model_state AggregateFunction(argMin, String, String),
    gpu_vendor_state AggregateFunction(argMin, String, String),
    gpu_model_state AggregateFunction(argMin, String, String),
    gpu_passthrough_state AggregateFunction(argMin, String, String),
    ram_speed_state AggregateFunction(argMin, String, String),
    events_state AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY execution_id";

/// Feeds `installs` from every block inserted into `events`.
const INSTALLS_MV: &str = "CREATE MATERIALIZED VIEW IF NOT EXISTS ?.installs_mv TO ?.installs AS
SELECT
    toDate(received_at) AS day,
    execution_id,
    argMinState(random_id, toString(event_id)) AS random_id_state,
    argMinState(type, toString(event_id)) AS type_state,
    argMinState(nsapp, toString(event_id)) AS nsapp_state,
    argMinState(repo_source, toString(event_id)) AS repo_source_state,
    argMinState(status, concat(toString(4 - {score}), toString(event_id))) AS status_state,
    maxState(toUInt8(status IN ('success', 'failed', 'aborted', 'unknown'))) AS final_state,
    argMinState(received_ms, if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS finished_ms_state,
    argMinState(ifNull(toInt64(exit_code), -1), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS exit_code_state,
    argMinState(ifNull(error, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_state,
    argMinState(ifNull(error_category, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_category_state,
    argMinState(ifNull(error_signature, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_signature_state,
    minState(received_ms) AS first_ms_state,
    maxState(received_ms) AS last_ms_state,
    argMinState(ifNull(toInt64(ct_type), -1), concat(if(isNull(ct_type), '2', '0'), toString(event_id))) AS ct_type_state,
    argMinState(ifNull(toInt64(disk_size), -1), concat(if(isNull(disk_size), '2', '0'), toString(event_id))) AS disk_size_state,
    argMinState(ifNull(toInt64(core_count), -1), concat(if(isNull(core_count), '2', '0'), toString(event_id))) AS core_count_state,
    argMinState(ifNull(toInt64(ram_size), -1), concat(if(isNull(ram_size), '2', '0'), toString(event_id))) AS ram_size_state,
    argMinState(ifNull(toInt64(install_duration), -1), concat(if(isNull(install_duration), '2', '0'), toString(event_id))) AS install_duration_state,
    argMinState(ifNull(os_type, ''), concat(if(isNull(os_type), '2', '0'), toString(event_id))) AS os_type_state,
    argMinState(ifNull(os_version, ''), concat(if(isNull(os_version), '2', '0'), toString(event_id))) AS os_version_state,
    argMinState(ifNull(pve_version, ''), concat(if(isNull(pve_version), '2', '0'), toString(event_id))) AS pve_version_state,
    argMinState(ifNull(method, ''), concat(if(isNull(method), '2', '0'), toString(event_id))) AS method_state,
    argMinState(ifNull(cpu_vendor, ''), concat(multiIf(isNull(cpu_vendor), '2', cpu_vendor = 'unknown', '1', '0'), toString(event_id))) AS cpu_vendor_state,
    argMinState(ifNull(cpu_model, ''), concat(if(isNull(cpu_model), '2', '0'), toString(event_id))) AS cpu_model_state,
    argMinState(ifNull(gpu_vendor, ''), concat(multiIf(isNull(gpu_vendor), '2', gpu_vendor = 'unknown', '1', '0'), toString(event_id))) AS gpu_vendor_state,
    argMinState(ifNull(gpu_model, ''), concat(if(isNull(gpu_model), '2', '0'), toString(event_id))) AS gpu_model_state,
    argMinState(ifNull(gpu_passthrough, ''), concat(multiIf(isNull(gpu_passthrough), '2', gpu_passthrough = 'unknown', '1', '0'), toString(event_id))) AS gpu_passthrough_state,
    argMinState(ifNull(ram_speed, ''), concat(if(isNull(ram_speed), '2', '0'), toString(event_id))) AS ram_speed_state,
    uniqExactState(toString(event_id)) AS events_state
FROM ?.events
GROUP BY day, execution_id";

/// The merged state of each install: what analysts and the dashboard read.
const INSTALLS_FINAL: &str = "CREATE VIEW IF NOT EXISTS ?.installs_final AS
SELECT
    execution_id,
    random_id,
    type,
    nsapp,
    repo_source,
    status,
    is_final,
    if(is_final = 0 OR exit_code_raw = -1, NULL, toUInt8(exit_code_raw)) AS exit_code,
    if(is_final = 0 OR error_raw = '', NULL, error_raw) AS error,
    if(is_final = 0 OR error_category_raw = '', NULL, error_category_raw) AS error_category,
    if(is_final = 0 OR error_signature_raw = '', NULL, error_signature_raw) AS error_signature,
    toDateTime(intDiv(first_ms, 1000)) AS started_at,
    toDateTime(intDiv(last_ms, 1000)) AS last_seen_at,
    if(is_final = 0, NULL, toDateTime(intDiv(finished_ms_raw, 1000))) AS finished_at,
    if(install_duration_raw != -1, toUInt32(install_duration_raw), if(is_final = 0, NULL, toUInt32(intDiv(finished_ms_raw - first_ms, 1000)))) AS duration,
    if(ct_type_raw = -1, NULL, toUInt8(ct_type_raw)) AS ct_type,
    if(disk_size_raw = -1, NULL, toUInt32(disk_size_raw)) AS disk_size,
    if(core_count_raw = -1, NULL, toUInt16(core_count_raw)) AS core_count,
    if(ram_size_raw = -1, NULL, toUInt32(ram_size_raw)) AS ram_size,
    if(install_duration_raw = -1, NULL, toUInt32(install_duration_raw)) AS install_duration,
    if(os_type_raw = '', NULL, os_type_raw) AS os_type,
    if(os_version_raw = '', NULL, os_version_raw) AS os_version,
    if(pve_version_raw = '', NULL, pve_version_raw) AS pve_version,
    if(method_raw = '', NULL, method_raw) AS method,
    if(cpu_vendor_raw = '', NULL, cpu_vendor_raw) AS cpu_vendor,
    if(cpu_model_raw = '', NULL, cpu_model_raw) AS cpu_model,
    if(gpu_vendor_raw = '', NULL, gpu_vendor_raw) AS gpu_vendor,
    if(gpu_model_raw = '', NULL, gpu_model_raw) AS gpu_model,
    if(gpu_passthrough_raw = '', NULL, gpu_passthrough_raw) AS gpu_passthrough,
    if(ram_speed_raw = '', NULL, ram_speed_raw) AS ram_speed,
    events
FROM (
    SELECT
        execution_id,
        argMinMerge(random_id_state) AS random_id,
        argMinMerge(type_state) AS type,
        argMinMerge(nsapp_state) AS nsapp,
        argMinMerge(repo_source_state) AS repo_source,
        argMinMerge(status_state) AS status,
        maxMerge(final_state) AS is_final,
        argMinMerge(finished_ms_state) AS finished_ms_raw,
        argMinMerge(exit_code_state) AS exit_code_raw,
        argMinMerge(error_state) AS error_raw,
        argMinMerge(error_category_state) AS error_category_raw,
        argMinMerge(error_signature_state) AS error_signature_raw,
        minMerge(first_ms_state) AS first_ms,
        maxMerge(last_ms_state) AS last_ms,
        argMinMerge(ct_type_state) AS ct_type_raw,
        argMinMerge(disk_size_state) AS disk_size_raw,
        argMinMerge(core_count_state) AS core_count_raw,
        argMinMerge(ram_size_state) AS ram_size_raw,
        argMinMerge(install_duration_state) AS install_duration_raw,
        argMinMerge(os_type_state) AS os_type_raw,
        argMinMerge(os_version_state) AS os_version_raw,
        argMinMerge(pve_version_state) AS pve_version_raw,
        argMinMerge(method_state) AS method_raw,
        argMinMerge(cpu_vendor_state) AS cpu_vendor_raw,
        argMinMerge(cpu_model_state) AS cpu_model_raw,
        argMinMerge(gpu_vendor_state) AS gpu_vendor_raw,
        argMinMerge(gpu_model_state) AS gpu_model_raw,
        argMinMerge(gpu_passthrough_state) AS gpu_passthrough_raw,
        argMinMerge(ram_speed_state) AS ram_speed_raw,
        uniqExactMerge(events_state) AS events
    FROM ?.installs
    GROUP BY execution_id
)";

/// Version 2. The materialized view of 18.16 must produce every column of `installs`, so once the new
/// state columns exist the view of version 1 cannot feed it any more: `installs_mv2` (every column) is
/// created before `installs_mv` is dropped. There is never a moment without a view feeding `installs` (a
/// moment with both only writes the same idempotent states twice), so a second writer running this
/// migration at the same time loses nothing. `installs_final` is dropped and created again with the new
/// columns; a reader may miss it for that moment.
const V2: &[Step] = &[
    Step::AddColumn {
        table: "events",
        column: "repo_slug",
        ty: "Nullable(String)",
    },
    Step::AddColumn {
        table: "events",
        column: "has_arm",
        ty: "Nullable(UInt8)",
    },
    Step::AddColumn {
        table: "events",
        column: "arch",
        ty: "Nullable(String)",
    },
    Step::AddColumn {
        table: "installs",
        column: "repo_slug_state",
        ty: "AggregateFunction(argMin, String, String)",
    },
    Step::AddColumn {
        table: "installs",
        column: "has_arm_state",
        ty: "AggregateFunction(argMin, String, String)",
    },
    Step::AddColumn {
        table: "installs",
        column: "arch_state",
        ty: "AggregateFunction(argMin, String, String)",
    },
    Step::AddColumn {
        table: "installs",
        column: "outcome_duration_state",
        ty: "AggregateFunction(argMin, Int64, String)",
    },
    Step::AddColumn {
        table: "installs",
        column: "outcome_ms_state",
        ty: "AggregateFunction(argMin, UInt64, String)",
    },
    Step::AddColumn {
        table: "installs",
        column: "longest_duration_state",
        ty: "AggregateFunction(max, Int64)",
    },
    Step::Sql(INSTALLS_MV2),
    Step::Sql("DROP TABLE IF EXISTS ?.installs_mv"),
    Step::Sql("DROP TABLE IF EXISTS ?.installs_final"),
    Step::Sql(INSTALLS_FINAL2),
];

/// Feeds `installs` from every block inserted into `events` (version 2: every column of `installs`).
/// `has_arm` is kept as `'0'`/`'1'` so that the empty state (`''`) reads as absent; the outcome duration
/// is keyed like the other outcome fields, with the final's `received_ms` beside it; the largest duration
/// is stored plus one.
const INSTALLS_MV2: &str = "CREATE MATERIALIZED VIEW IF NOT EXISTS ?.installs_mv2 TO ?.installs AS
SELECT
    toDate(received_at) AS day,
    execution_id,
    argMinState(random_id, toString(event_id)) AS random_id_state,
    argMinState(type, toString(event_id)) AS type_state,
    argMinState(nsapp, toString(event_id)) AS nsapp_state,
    argMinState(repo_source, toString(event_id)) AS repo_source_state,
    argMinState(status, concat(toString(4 - {score}), toString(event_id))) AS status_state,
    maxState(toUInt8(status IN ('success', 'failed', 'aborted', 'unknown'))) AS final_state,
    argMinState(received_ms, if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS finished_ms_state,
    argMinState(ifNull(toInt64(exit_code), -1), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS exit_code_state,
    argMinState(ifNull(error, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_state,
    argMinState(ifNull(error_category, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_category_state,
    argMinState(ifNull(error_signature, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_signature_state,
    minState(received_ms) AS first_ms_state,
    maxState(received_ms) AS last_ms_state,
    argMinState(ifNull(toInt64(ct_type), -1), concat(if(isNull(ct_type), '2', '0'), toString(event_id))) AS ct_type_state,
    argMinState(ifNull(toInt64(disk_size), -1), concat(if(isNull(disk_size), '2', '0'), toString(event_id))) AS disk_size_state,
    argMinState(ifNull(toInt64(core_count), -1), concat(if(isNull(core_count), '2', '0'), toString(event_id))) AS core_count_state,
    argMinState(ifNull(toInt64(ram_size), -1), concat(if(isNull(ram_size), '2', '0'), toString(event_id))) AS ram_size_state,
    argMinState(ifNull(toInt64(install_duration), -1), concat(if(isNull(install_duration), '2', '0'), toString(event_id))) AS install_duration_state,
    argMinState(ifNull(os_type, ''), concat(if(isNull(os_type), '2', '0'), toString(event_id))) AS os_type_state,
    argMinState(ifNull(os_version, ''), concat(if(isNull(os_version), '2', '0'), toString(event_id))) AS os_version_state,
    argMinState(ifNull(pve_version, ''), concat(if(isNull(pve_version), '2', '0'), toString(event_id))) AS pve_version_state,
    argMinState(ifNull(method, ''), concat(if(isNull(method), '2', '0'), toString(event_id))) AS method_state,
    argMinState(ifNull(cpu_vendor, ''), concat(multiIf(isNull(cpu_vendor), '2', cpu_vendor = 'unknown', '1', '0'), toString(event_id))) AS cpu_vendor_state,
    argMinState(ifNull(cpu_model, ''), concat(if(isNull(cpu_model), '2', '0'), toString(event_id))) AS cpu_model_state,
    argMinState(ifNull(gpu_vendor, ''), concat(multiIf(isNull(gpu_vendor), '2', gpu_vendor = 'unknown', '1', '0'), toString(event_id))) AS gpu_vendor_state,
    argMinState(ifNull(gpu_model, ''), concat(if(isNull(gpu_model), '2', '0'), toString(event_id))) AS gpu_model_state,
    argMinState(ifNull(gpu_passthrough, ''), concat(multiIf(isNull(gpu_passthrough), '2', gpu_passthrough = 'unknown', '1', '0'), toString(event_id))) AS gpu_passthrough_state,
    argMinState(ifNull(ram_speed, ''), concat(if(isNull(ram_speed), '2', '0'), toString(event_id))) AS ram_speed_state,
    uniqExactState(toString(event_id)) AS events_state,
    argMinState(ifNull(repo_slug, ''), concat(if(isNull(repo_slug), '2', '0'), toString(event_id))) AS repo_slug_state,
    argMinState(ifNull(toString(has_arm), ''), concat(if(isNull(has_arm), '2', '0'), toString(event_id))) AS has_arm_state,
    argMinState(ifNull(arch, ''), concat(if(isNull(arch), '2', '0'), toString(event_id))) AS arch_state,
    argMinState(if(status IN ('success', 'failed', 'aborted', 'unknown'), ifNull(toInt64(install_duration), -1), toInt64(-1)), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS outcome_duration_state,
    argMinState(if(status IN ('success', 'failed', 'aborted', 'unknown'), received_ms, toUInt64(0)), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS outcome_ms_state,
    maxState(ifNull(toInt64(install_duration) + 1, toInt64(0))) AS longest_duration_state
FROM ?.events
GROUP BY day, execution_id";

/// The merged state of each install (version 2): the columns of version 1 plus `repo_slug`, `has_arm`
/// and `arch`, and `install_duration` of the deciding final, else the largest any event carried (rows of
/// version 1 count with their first duration; an install decided by a final of version 1 keeps that
/// first duration); `duration` falls back to the clock from the first event to the final.
const INSTALLS_FINAL2: &str = "CREATE VIEW IF NOT EXISTS ?.installs_final AS
SELECT
    execution_id,
    random_id,
    type,
    nsapp,
    repo_source,
    status,
    is_final,
    if(is_final = 0 OR exit_code_raw = -1, NULL, toUInt8(exit_code_raw)) AS exit_code,
    if(is_final = 0 OR error_raw = '', NULL, error_raw) AS error,
    if(is_final = 0 OR error_category_raw = '', NULL, error_category_raw) AS error_category,
    if(is_final = 0 OR error_signature_raw = '', NULL, error_signature_raw) AS error_signature,
    toDateTime(intDiv(first_ms, 1000)) AS started_at,
    toDateTime(intDiv(last_ms, 1000)) AS last_seen_at,
    if(is_final = 0, NULL, toDateTime(intDiv(finished_ms_raw, 1000))) AS finished_at,
    if(reported_duration_raw != -1, toUInt32(reported_duration_raw), if(is_final = 0, NULL, toUInt32(intDiv(finished_ms_raw - first_ms, 1000)))) AS duration,
    if(ct_type_raw = -1, NULL, toUInt8(ct_type_raw)) AS ct_type,
    if(disk_size_raw = -1, NULL, toUInt32(disk_size_raw)) AS disk_size,
    if(core_count_raw = -1, NULL, toUInt16(core_count_raw)) AS core_count,
    if(ram_size_raw = -1, NULL, toUInt32(ram_size_raw)) AS ram_size,
    if(reported_duration_raw = -1, NULL, toUInt32(reported_duration_raw)) AS install_duration,
    if(os_type_raw = '', NULL, os_type_raw) AS os_type,
    if(os_version_raw = '', NULL, os_version_raw) AS os_version,
    if(pve_version_raw = '', NULL, pve_version_raw) AS pve_version,
    if(method_raw = '', NULL, method_raw) AS method,
    if(cpu_vendor_raw = '', NULL, cpu_vendor_raw) AS cpu_vendor,
    if(cpu_model_raw = '', NULL, cpu_model_raw) AS cpu_model,
    if(gpu_vendor_raw = '', NULL, gpu_vendor_raw) AS gpu_vendor,
    if(gpu_model_raw = '', NULL, gpu_model_raw) AS gpu_model,
    if(gpu_passthrough_raw = '', NULL, gpu_passthrough_raw) AS gpu_passthrough,
    if(ram_speed_raw = '', NULL, ram_speed_raw) AS ram_speed,
    events,
    if(repo_slug_raw = '', NULL, repo_slug_raw) AS repo_slug,
    if(has_arm_raw = '', NULL, toUInt8(has_arm_raw = '1')) AS has_arm,
    if(arch_raw = '', NULL, arch_raw) AS arch
FROM (
    SELECT
        execution_id,
        argMinMerge(random_id_state) AS random_id,
        argMinMerge(type_state) AS type,
        argMinMerge(nsapp_state) AS nsapp,
        argMinMerge(repo_source_state) AS repo_source,
        argMinMerge(status_state) AS status,
        maxMerge(final_state) AS is_final,
        argMinMerge(finished_ms_state) AS finished_ms_raw,
        argMinMerge(exit_code_state) AS exit_code_raw,
        argMinMerge(error_state) AS error_raw,
        argMinMerge(error_category_state) AS error_category_raw,
        argMinMerge(error_signature_state) AS error_signature_raw,
        minMerge(first_ms_state) AS first_ms,
        maxMerge(last_ms_state) AS last_ms,
        argMinMerge(ct_type_state) AS ct_type_raw,
        argMinMerge(disk_size_state) AS disk_size_raw,
        argMinMerge(core_count_state) AS core_count_raw,
        argMinMerge(ram_size_state) AS ram_size_raw,
        argMinMerge(install_duration_state) AS first_duration_raw,
        maxMerge(longest_duration_state) - 1 AS longest_duration_raw,
        argMinMerge(outcome_duration_state) AS outcome_duration_raw,
        (is_final = 1 AND argMinMerge(outcome_ms_state) = finished_ms_raw) AS decided_since_v2,
        multiIf(decided_since_v2 AND outcome_duration_raw != -1, outcome_duration_raw,
                is_final = 1 AND NOT decided_since_v2, first_duration_raw,
                greatest(longest_duration_raw, first_duration_raw)) AS reported_duration_raw,
        argMinMerge(os_type_state) AS os_type_raw,
        argMinMerge(os_version_state) AS os_version_raw,
        argMinMerge(pve_version_state) AS pve_version_raw,
        argMinMerge(method_state) AS method_raw,
        argMinMerge(cpu_vendor_state) AS cpu_vendor_raw,
        argMinMerge(cpu_model_state) AS cpu_model_raw,
        argMinMerge(gpu_vendor_state) AS gpu_vendor_raw,
        argMinMerge(gpu_model_state) AS gpu_model_raw,
        argMinMerge(gpu_passthrough_state) AS gpu_passthrough_raw,
        argMinMerge(ram_speed_state) AS ram_speed_raw,
        uniqExactMerge(events_state) AS events,
        argMinMerge(repo_slug_state) AS repo_slug_raw,
        argMinMerge(has_arm_state) AS has_arm_raw,
        argMinMerge(arch_state) AS arch_raw
    FROM ?.installs
    GROUP BY execution_id
)";

/// The partial state of each install and `random_id` from `events` (version 3): the states of
/// `installs_mv2`, with `random_id` as a key instead of a state and the first event id of the
/// `random_id` beside them. `$where` narrows a backfill.
macro_rules! v3_states_of_events {
    ($where:literal) => {
        concat!(
            "SELECT
    toDate(received_at) AS day,
    execution_id,
    random_id,
    minState(toString(event_id)) AS first_event_state,
    argMinState(type, toString(event_id)) AS type_state,
    argMinState(nsapp, toString(event_id)) AS nsapp_state,
    argMinState(repo_source, toString(event_id)) AS repo_source_state,
    argMinState(status, concat(toString(4 - {score}), toString(event_id))) AS status_state,
    maxState(toUInt8(status IN ('success', 'failed', 'aborted', 'unknown'))) AS final_state,
    argMinState(received_ms, if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS finished_ms_state,
    argMinState(ifNull(toInt64(exit_code), -1), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS exit_code_state,
    argMinState(ifNull(error, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_state,
    argMinState(ifNull(error_category, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_category_state,
    argMinState(ifNull(error_signature, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS error_signature_state,
    minState(received_ms) AS first_ms_state,
    maxState(received_ms) AS last_ms_state,
    argMinState(ifNull(toInt64(ct_type), -1), concat(if(isNull(ct_type), '2', '0'), toString(event_id))) AS ct_type_state,
    argMinState(ifNull(toInt64(disk_size), -1), concat(if(isNull(disk_size), '2', '0'), toString(event_id))) AS disk_size_state,
    argMinState(ifNull(toInt64(core_count), -1), concat(if(isNull(core_count), '2', '0'), toString(event_id))) AS core_count_state,
    argMinState(ifNull(toInt64(ram_size), -1), concat(if(isNull(ram_size), '2', '0'), toString(event_id))) AS ram_size_state,
    argMinState(ifNull(toInt64(install_duration), -1), concat(if(isNull(install_duration), '2', '0'), toString(event_id))) AS install_duration_state,
    argMinState(ifNull(os_type, ''), concat(if(isNull(os_type), '2', '0'), toString(event_id))) AS os_type_state,
    argMinState(ifNull(os_version, ''), concat(if(isNull(os_version), '2', '0'), toString(event_id))) AS os_version_state,
    argMinState(ifNull(pve_version, ''), concat(if(isNull(pve_version), '2', '0'), toString(event_id))) AS pve_version_state,
    argMinState(ifNull(method, ''), concat(if(isNull(method), '2', '0'), toString(event_id))) AS method_state,
    argMinState(ifNull(cpu_vendor, ''), concat(multiIf(isNull(cpu_vendor), '2', cpu_vendor = 'unknown', '1', '0'), toString(event_id))) AS cpu_vendor_state,
    argMinState(ifNull(cpu_model, ''), concat(if(isNull(cpu_model), '2', '0'), toString(event_id))) AS cpu_model_state,
    argMinState(ifNull(gpu_vendor, ''), concat(multiIf(isNull(gpu_vendor), '2', gpu_vendor = 'unknown', '1', '0'), toString(event_id))) AS gpu_vendor_state,
    argMinState(ifNull(gpu_model, ''), concat(if(isNull(gpu_model), '2', '0'), toString(event_id))) AS gpu_model_state,
    argMinState(ifNull(gpu_passthrough, ''), concat(multiIf(isNull(gpu_passthrough), '2', gpu_passthrough = 'unknown', '1', '0'), toString(event_id))) AS gpu_passthrough_state,
    argMinState(ifNull(ram_speed, ''), concat(if(isNull(ram_speed), '2', '0'), toString(event_id))) AS ram_speed_state,
    uniqExactState(toString(event_id)) AS events_state,
    argMinState(ifNull(repo_slug, ''), concat(if(isNull(repo_slug), '2', '0'), toString(event_id))) AS repo_slug_state,
    argMinState(ifNull(toString(has_arm), ''), concat(if(isNull(has_arm), '2', '0'), toString(event_id))) AS has_arm_state,
    argMinState(ifNull(arch, ''), concat(if(isNull(arch), '2', '0'), toString(event_id))) AS arch_state,
    argMinState(if(status IN ('success', 'failed', 'aborted', 'unknown'), ifNull(toInt64(install_duration), -1), toInt64(-1)), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS outcome_duration_state,
    argMinState(if(status IN ('success', 'failed', 'aborted', 'unknown'), received_ms, toUInt64(0)), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS outcome_ms_state,
    maxState(ifNull(toInt64(install_duration) + 1, toInt64(0))) AS longest_duration_state
FROM ?.events
",
            $where,
            "GROUP BY day, execution_id, random_id"
        )
    };
}

/// The same from the states of `installs` (version 3's backfill of an install with one `random_id`): its
/// states copied as they are, so that every figure stays as versions 1 and 2 showed it, with the first
/// event `''` (earlier than any event id: a later event of another `random_id` never takes it over).
macro_rules! v3_states_of_installs {
    ($where:literal) => {
        concat!(
            "SELECT
    day,
    execution_id,
    argMinMerge(random_id_state) AS random_id,
    minState('') AS first_event_state,
    argMinMergeState(type_state) AS type_state,
    argMinMergeState(nsapp_state) AS nsapp_state,
    argMinMergeState(repo_source_state) AS repo_source_state,
    argMinMergeState(status_state) AS status_state,
    maxMergeState(final_state) AS final_state,
    argMinMergeState(finished_ms_state) AS finished_ms_state,
    argMinMergeState(exit_code_state) AS exit_code_state,
    argMinMergeState(error_state) AS error_state,
    argMinMergeState(error_category_state) AS error_category_state,
    argMinMergeState(error_signature_state) AS error_signature_state,
    minMergeState(first_ms_state) AS first_ms_state,
    maxMergeState(last_ms_state) AS last_ms_state,
    argMinMergeState(ct_type_state) AS ct_type_state,
    argMinMergeState(disk_size_state) AS disk_size_state,
    argMinMergeState(core_count_state) AS core_count_state,
    argMinMergeState(ram_size_state) AS ram_size_state,
    argMinMergeState(install_duration_state) AS install_duration_state,
    argMinMergeState(os_type_state) AS os_type_state,
    argMinMergeState(os_version_state) AS os_version_state,
    argMinMergeState(pve_version_state) AS pve_version_state,
    argMinMergeState(method_state) AS method_state,
    argMinMergeState(cpu_vendor_state) AS cpu_vendor_state,
    argMinMergeState(cpu_model_state) AS cpu_model_state,
    argMinMergeState(gpu_vendor_state) AS gpu_vendor_state,
    argMinMergeState(gpu_model_state) AS gpu_model_state,
    argMinMergeState(gpu_passthrough_state) AS gpu_passthrough_state,
    argMinMergeState(ram_speed_state) AS ram_speed_state,
    uniqExactMergeState(events_state) AS events_state,
    argMinMergeState(repo_slug_state) AS repo_slug_state,
    argMinMergeState(has_arm_state) AS has_arm_state,
    argMinMergeState(arch_state) AS arch_state,
    argMinMergeState(outcome_duration_state) AS outcome_duration_state,
    argMinMergeState(outcome_ms_state) AS outcome_ms_state,
    maxMergeState(longest_duration_state) AS longest_duration_state
FROM ?.installs
",
            $where,
            "GROUP BY day, execution_id"
        )
    };
}

/// Partial install states per (install, `random_id`, day, inserted block): the candidates of an install,
/// of which `installs_final` shows the one whose first event is the earliest (`schema::merge::forged`).
const INSTALLS_BY_RANDOM_ID: &str = "CREATE TABLE IF NOT EXISTS ?.installs_by_random_id (
    day Date,
    execution_id String,
    random_id String,
    first_event_state AggregateFunction(min, String),
    type_state AggregateFunction(argMin, String, String),
    nsapp_state AggregateFunction(argMin, String, String),
    repo_source_state AggregateFunction(argMin, String, String),
    status_state AggregateFunction(argMin, String, String),
    final_state AggregateFunction(max, UInt8),
    finished_ms_state AggregateFunction(argMin, UInt64, String),
    exit_code_state AggregateFunction(argMin, Int64, String),
    error_state AggregateFunction(argMin, String, String),
    error_category_state AggregateFunction(argMin, String, String),
    error_signature_state AggregateFunction(argMin, String, String),
    first_ms_state AggregateFunction(min, UInt64),
    last_ms_state AggregateFunction(max, UInt64),
    ct_type_state AggregateFunction(argMin, Int64, String),
    disk_size_state AggregateFunction(argMin, Int64, String),
    core_count_state AggregateFunction(argMin, Int64, String),
    ram_size_state AggregateFunction(argMin, Int64, String),
    install_duration_state AggregateFunction(argMin, Int64, String),
    os_type_state AggregateFunction(argMin, String, String),
    os_version_state AggregateFunction(argMin, String, String),
    pve_version_state AggregateFunction(argMin, String, String),
    method_state AggregateFunction(argMin, String, String),
    cpu_vendor_state AggregateFunction(argMin, String, String),
    cpu_model_state AggregateFunction(argMin, String, String),
    gpu_vendor_state AggregateFunction(argMin, String, String),
    gpu_model_state AggregateFunction(argMin, String, String),
    gpu_passthrough_state AggregateFunction(argMin, String, String),
    ram_speed_state AggregateFunction(argMin, String, String),
    events_state AggregateFunction(uniqExact, String),
    repo_slug_state AggregateFunction(argMin, String, String),
    has_arm_state AggregateFunction(argMin, String, String),
    arch_state AggregateFunction(argMin, String, String),
    outcome_duration_state AggregateFunction(argMin, Int64, String),
    outcome_ms_state AggregateFunction(argMin, UInt64, String),
    longest_duration_state AggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (execution_id, random_id)";

/// The merged state of each install (version 3): per `random_id` every column as in version 2, then of
/// an install only the `random_id` whose first event is the earliest (the owner, like `schema::merge`);
/// the events of other `random_id`s (a final posted by someone who learned the `execution_id`) change
/// nothing it shows, `events` included. The columns are those of version 2.
const INSTALLS_FINAL3: &str = "CREATE VIEW IF NOT EXISTS ?.installs_final AS
SELECT
    execution_id,
    random_id,
    type,
    nsapp,
    repo_source,
    status,
    is_final,
    if(is_final = 0 OR exit_code_raw = -1, NULL, toUInt8(exit_code_raw)) AS exit_code,
    if(is_final = 0 OR error_raw = '', NULL, error_raw) AS error,
    if(is_final = 0 OR error_category_raw = '', NULL, error_category_raw) AS error_category,
    if(is_final = 0 OR error_signature_raw = '', NULL, error_signature_raw) AS error_signature,
    toDateTime(intDiv(first_ms, 1000)) AS started_at,
    toDateTime(intDiv(last_ms, 1000)) AS last_seen_at,
    if(is_final = 0, NULL, toDateTime(intDiv(finished_ms_raw, 1000))) AS finished_at,
    if(reported_duration_raw != -1, toUInt32(reported_duration_raw), if(is_final = 0, NULL, toUInt32(intDiv(finished_ms_raw - first_ms, 1000)))) AS duration,
    if(ct_type_raw = -1, NULL, toUInt8(ct_type_raw)) AS ct_type,
    if(disk_size_raw = -1, NULL, toUInt32(disk_size_raw)) AS disk_size,
    if(core_count_raw = -1, NULL, toUInt16(core_count_raw)) AS core_count,
    if(ram_size_raw = -1, NULL, toUInt32(ram_size_raw)) AS ram_size,
    if(reported_duration_raw = -1, NULL, toUInt32(reported_duration_raw)) AS install_duration,
    if(os_type_raw = '', NULL, os_type_raw) AS os_type,
    if(os_version_raw = '', NULL, os_version_raw) AS os_version,
    if(pve_version_raw = '', NULL, pve_version_raw) AS pve_version,
    if(method_raw = '', NULL, method_raw) AS method,
    if(cpu_vendor_raw = '', NULL, cpu_vendor_raw) AS cpu_vendor,
    if(cpu_model_raw = '', NULL, cpu_model_raw) AS cpu_model,
    if(gpu_vendor_raw = '', NULL, gpu_vendor_raw) AS gpu_vendor,
    if(gpu_model_raw = '', NULL, gpu_model_raw) AS gpu_model,
    if(gpu_passthrough_raw = '', NULL, gpu_passthrough_raw) AS gpu_passthrough,
    if(ram_speed_raw = '', NULL, ram_speed_raw) AS ram_speed,
    events,
    if(repo_slug_raw = '', NULL, repo_slug_raw) AS repo_slug,
    if(has_arm_raw = '', NULL, toUInt8(has_arm_raw = '1')) AS has_arm,
    if(arch_raw = '', NULL, arch_raw) AS arch
FROM (
    SELECT
        execution_id,
        argMin(c_random_id, first_event) AS random_id,
        argMin(c_type, first_event) AS type,
        argMin(c_nsapp, first_event) AS nsapp,
        argMin(c_repo_source, first_event) AS repo_source,
        argMin(c_status, first_event) AS status,
        argMin(c_is_final, first_event) AS is_final,
        argMin(c_finished_ms_raw, first_event) AS finished_ms_raw,
        argMin(c_exit_code_raw, first_event) AS exit_code_raw,
        argMin(c_error_raw, first_event) AS error_raw,
        argMin(c_error_category_raw, first_event) AS error_category_raw,
        argMin(c_error_signature_raw, first_event) AS error_signature_raw,
        argMin(c_first_ms, first_event) AS first_ms,
        argMin(c_last_ms, first_event) AS last_ms,
        argMin(c_ct_type_raw, first_event) AS ct_type_raw,
        argMin(c_disk_size_raw, first_event) AS disk_size_raw,
        argMin(c_core_count_raw, first_event) AS core_count_raw,
        argMin(c_ram_size_raw, first_event) AS ram_size_raw,
        argMin(c_reported_duration_raw, first_event) AS reported_duration_raw,
        argMin(c_os_type_raw, first_event) AS os_type_raw,
        argMin(c_os_version_raw, first_event) AS os_version_raw,
        argMin(c_pve_version_raw, first_event) AS pve_version_raw,
        argMin(c_method_raw, first_event) AS method_raw,
        argMin(c_cpu_vendor_raw, first_event) AS cpu_vendor_raw,
        argMin(c_cpu_model_raw, first_event) AS cpu_model_raw,
        argMin(c_gpu_vendor_raw, first_event) AS gpu_vendor_raw,
        argMin(c_gpu_model_raw, first_event) AS gpu_model_raw,
        argMin(c_gpu_passthrough_raw, first_event) AS gpu_passthrough_raw,
        argMin(c_ram_speed_raw, first_event) AS ram_speed_raw,
        argMin(c_events, first_event) AS events,
        argMin(c_repo_slug_raw, first_event) AS repo_slug_raw,
        argMin(c_has_arm_raw, first_event) AS has_arm_raw,
        argMin(c_arch_raw, first_event) AS arch_raw
    FROM (
        SELECT
            execution_id,
            minMerge(first_event_state) AS first_event,
            random_id AS c_random_id,
            argMinMerge(type_state) AS c_type,
            argMinMerge(nsapp_state) AS c_nsapp,
            argMinMerge(repo_source_state) AS c_repo_source,
            argMinMerge(status_state) AS c_status,
            maxMerge(final_state) AS c_is_final,
            argMinMerge(finished_ms_state) AS c_finished_ms_raw,
            argMinMerge(exit_code_state) AS c_exit_code_raw,
            argMinMerge(error_state) AS c_error_raw,
            argMinMerge(error_category_state) AS c_error_category_raw,
            argMinMerge(error_signature_state) AS c_error_signature_raw,
            minMerge(first_ms_state) AS c_first_ms,
            maxMerge(last_ms_state) AS c_last_ms,
            argMinMerge(ct_type_state) AS c_ct_type_raw,
            argMinMerge(disk_size_state) AS c_disk_size_raw,
            argMinMerge(core_count_state) AS c_core_count_raw,
            argMinMerge(ram_size_state) AS c_ram_size_raw,
            argMinMerge(install_duration_state) AS c_first_duration_raw,
            maxMerge(longest_duration_state) - 1 AS c_longest_duration_raw,
            argMinMerge(outcome_duration_state) AS c_outcome_duration_raw,
            (c_is_final = 1 AND argMinMerge(outcome_ms_state) = c_finished_ms_raw) AS c_decided_since_v2,
            multiIf(c_decided_since_v2 AND c_outcome_duration_raw != -1, c_outcome_duration_raw,
                    c_is_final = 1 AND NOT c_decided_since_v2, c_first_duration_raw,
                    greatest(c_longest_duration_raw, c_first_duration_raw)) AS c_reported_duration_raw,
            argMinMerge(os_type_state) AS c_os_type_raw,
            argMinMerge(os_version_state) AS c_os_version_raw,
            argMinMerge(pve_version_state) AS c_pve_version_raw,
            argMinMerge(method_state) AS c_method_raw,
            argMinMerge(cpu_vendor_state) AS c_cpu_vendor_raw,
            argMinMerge(cpu_model_state) AS c_cpu_model_raw,
            argMinMerge(gpu_vendor_state) AS c_gpu_vendor_raw,
            argMinMerge(gpu_model_state) AS c_gpu_model_raw,
            argMinMerge(gpu_passthrough_state) AS c_gpu_passthrough_raw,
            argMinMerge(ram_speed_state) AS c_ram_speed_raw,
            uniqExactMerge(events_state) AS c_events,
            argMinMerge(repo_slug_state) AS c_repo_slug_raw,
            argMinMerge(has_arm_state) AS c_has_arm_raw,
            argMinMerge(arch_state) AS c_arch_raw
        FROM ?.installs_by_random_id
        GROUP BY execution_id, random_id
    )
    GROUP BY execution_id
)";

/// Version 3: an install shows only the events of the `random_id` of its first event. `installs` merges
/// every event of an `execution_id` into one state, which cannot be taken apart again, so the states are
/// kept per `random_id` in a new table (`installs_by_random_id`, fed by `installs_mv3`) and
/// `installs_final` picks the owner's. The view is created before the backfill, and every state is
/// idempotent, so rows seen by both count once. The backfill copies the states of `installs` for every
/// install whose events carry one `random_id` (all but forged ones: their figures stay exactly), and
/// rebuilds the others from `events` (they follow version 2's duration rule for all their events); a
/// second pass over the last day catches an insert of another writer that was running while the view
/// was created. `installs` and `installs_mv2` stay as they are (retention finds old installs there).
const V3: &[Step] = &[
    Step::Sql(INSTALLS_BY_RANDOM_ID),
    Step::Sql(INSTALLS_MV3),
    Step::Sql(BACKFILL_ONE_RANDOM_ID),
    Step::Sql(BACKFILL_SEVERAL_RANDOM_IDS),
    Step::Sql(BACKFILL_ONE_RANDOM_ID_LAST_DAY),
    Step::Sql(BACKFILL_SEVERAL_RANDOM_IDS_LAST_DAY),
    Step::Sql("DROP TABLE IF EXISTS ?.installs_final"),
    Step::Sql(INSTALLS_FINAL3),
];

/// Feeds `installs_by_random_id` from every block inserted into `events`.
const INSTALLS_MV3: &str = concat!(
    "CREATE MATERIALIZED VIEW IF NOT EXISTS ?.installs_mv3 TO ?.installs_by_random_id AS\n",
    v3_states_of_events!("")
);

/// Installs whose events carry one `random_id`: their states of `installs`, as they are.
const BACKFILL_ONE_RANDOM_ID: &str = concat!(
    "INSERT INTO ?.installs_by_random_id\n",
    v3_states_of_installs!("WHERE execution_id NOT IN (SELECT execution_id FROM ?.events GROUP BY execution_id HAVING min(random_id) != max(random_id))\n")
);

/// Installs whose events carry several `random_id`s: rebuilt from `events`, per `random_id`.
const BACKFILL_SEVERAL_RANDOM_IDS: &str = concat!(
    "INSERT INTO ?.installs_by_random_id\n",
    v3_states_of_events!("WHERE execution_id IN (SELECT execution_id FROM ?.events GROUP BY execution_id HAVING min(random_id) != max(random_id))\n")
);

/// The last day of [`BACKFILL_ONE_RANDOM_ID`] again, after the whole backfill.
const BACKFILL_ONE_RANDOM_ID_LAST_DAY: &str = concat!(
    "INSERT INTO ?.installs_by_random_id\n",
    v3_states_of_installs!("WHERE day >= yesterday() AND execution_id NOT IN (SELECT execution_id FROM ?.events GROUP BY execution_id HAVING min(random_id) != max(random_id))\n")
);

/// The last day of [`BACKFILL_SEVERAL_RANDOM_IDS`] again, after the whole backfill.
const BACKFILL_SEVERAL_RANDOM_IDS_LAST_DAY: &str = concat!(
    "INSERT INTO ?.installs_by_random_id\n",
    v3_states_of_events!("WHERE received_at >= now() - INTERVAL 1 DAY AND execution_id IN (SELECT execution_id FROM ?.events GROUP BY execution_id HAVING min(random_id) != max(random_id))\n")
);

/// Version 4: `installs_final` reads one plain row per install instead of merging every install's states
/// on each read. The settle job of the writer ([`crate::clickhouse::settle`]) merges, every interval, the
/// installs that ClickHouse received something about before a watermark (`now() - SETTLE_LAG_SECS`) from
/// their events into `installs_settled` (a row per install and settle, `version` = the watermark), then
/// records the watermark. `installs_final` shows the newest settled row (up to the watermark) of an install
/// not touched since the watermark, and merges the installs touched since then from `events` at read time
/// (`install_touches`, fed by `install_touches_mv`, says which; `events` is ordered by `execution_id`). So
/// every read is exact (except one that overlaps the record of a watermark: writer README, "Reads during a
/// settle"), and its cost is a scan of plain columns plus the merge of the few recent installs.
///
/// The upgrade: the touches start being recorded, then a watermark is picked (once), then every install of
/// version 3's `installs_final` is copied as it shows (legacy duration rules included) with the watermark
/// as its version, while `installs_mv2`/`installs_mv3` still feed version 3's tables; an insert of another
/// writer meanwhile is touched after the watermark, so it is merged from `events`. Only then the view is
/// swapped and the two heavy materialized views are dropped: an insert feeds `events` and the touches only.
/// `installs` and `installs_by_random_id` stay as they are (no longer fed). A rerun copies only installs
/// without a settled row; two writers upgrading at once may copy an install twice with two watermarks,
/// which the settle job's first pass finds and marks (`installs_resettled`).
const V4: &[Step] = &[
    Step::Sql(INSTALL_TOUCHES),
    Step::Sql(SETTLE_WATERMARK),
    Step::Sql(INSTALLS_SETTLED),
    Step::Sql(INSTALLS_RESETTLED),
    Step::Sql(INSTALL_TOUCHES_MV),
    Step::Sql(PICK_WATERMARK),
    Step::Sql(BACKFILL_SETTLED),
    Step::Sql("DROP TABLE IF EXISTS ?.installs_final"),
    Step::Built(installs_final4),
    Step::Sql("DROP TABLE IF EXISTS ?.installs_mv2"),
    Step::Sql("DROP TABLE IF EXISTS ?.installs_mv3"),
];

/// Version 5: `installs_settled` ordered by `(started_at, execution_id)` instead of `execution_id`, so
/// that a view of a period (`started_at >= …`, pushed into `installs_final` by the web's
/// `enable_optimize_predicate_expression`) reads the rows of that period only, and a lookup that knows
/// when its installs started reads a few granules. ClickHouse cannot change a sorting key in place: the
/// rows are copied into `installs_settled_next` (every `(execution_id, version)` not there yet), the two
/// tables swap names in one `RENAME`, and whatever a writer of version 4 settled into the old table
/// meanwhile is copied again before the old table is dropped. `installs_final` names `installs_settled`,
/// so it reads the new table from the swap on. Every step runs only while its condition holds, so an
/// interrupted upgrade (or two writers upgrading at once) finishes on the next start; a row two writers
/// copy at once is the same row twice, which the settle job's first pass marks (`installs_resettled`),
/// and the last step marks as well.
const V5: &[Step] = &[
    Step::When {
        when: SETTLED_BY_ID,
        sql: INSTALLS_SETTLED_NEXT,
    },
    Step::When {
        when: SETTLED_BY_ID,
        sql: "INSERT INTO ?.installs_settled_next SELECT * FROM ?.installs_settled
WHERE (execution_id, version) NOT IN (SELECT execution_id, version FROM ?.installs_settled_next)",
    },
    Step::When {
        when: SETTLED_BY_ID,
        sql: "RENAME TABLE ?.installs_settled TO ?.installs_settled_v4, ?.installs_settled_next TO ?.installs_settled",
    },
    Step::When {
        when: SETTLED_V4_LEFT,
        sql: "INSERT INTO ?.installs_settled SELECT * FROM ?.installs_settled_v4
WHERE (execution_id, version) NOT IN (SELECT execution_id, version FROM ?.installs_settled)",
    },
    Step::Sql("DROP TABLE IF EXISTS ?.installs_settled_v4"),
    Step::Sql(MARK_RESETTLED),
];

/// Version 6: per-day rollups of the dashboards' passes (`schema::rollup`). Every settle counts the rows
/// it inserted into `installs_settled` under the UTC day their installs started on, in `settled_blocks`,
/// before it records its watermark ([`SETTLED_BLOCKS_OF_SETTLE`]; a row can change that day and every
/// later one: an install's first event only ever becomes earlier, so its older rows started on the same
/// day or later); retention adds its deletions there too. (Not a materialized view: creating one on
/// `installs_settled` while another writer settles into it can stall both on ClickHouse 18.16.) The settle job's rollup step ([`crate::clickhouse::rollup`])
/// stores each complete day's answer of each pass in `day_rollups` and lists it in `day_rollup_index`
/// with the day's change count when it was taken; readers use a snapshot only while that count is still
/// the day's. Nothing is copied: on an upgraded database every day's count starts at 0 and the first
/// rollup step takes every day's snapshot.
const V6: &[Step] = &[
    Step::Sql(SETTLED_BLOCKS),
    Step::Sql(DAY_ROLLUPS),
    Step::Sql(DAY_ROLLUP_INDEX),
];

/// Version 7: a re-settled install (marked in `installs_resettled`: nearly every live install, whose final
/// comes a settle or more after its start) is read through a `GROUP BY execution_id, started_at` that
/// keeps each column of its newest row (`argMax` by version). A period's filter on `started_at`, a key
/// of that `GROUP BY`, reaches its rows, so a view of a day reads that day's re-settled rows; version 4's
/// `LIMIT 1 BY execution_id`, which ClickHouse pushes no filter below, read every re-settled install of
/// all time in every view. The `GROUP BY` holds one group per install only while all its rows started at
/// the same moment; an install whose start moved (an event delayed on its way to ClickHouse, settled
/// after a later one) is marked in `installs_moved` and keeps the `LIMIT 1 BY` branch. The upgrade
/// creates `installs_moved`, marks every install whose rows started at more than one moment (a scan of
/// the re-settled installs' rows), then swaps the view (missing for a moment). A writer of version 6
/// settling meanwhile does not mark moved installs: upgrade every writer together, as for version 6.
const V7: &[Step] = &[
    Step::Sql(INSTALLS_MOVED),
    Step::Sql(MARK_MOVED),
    Step::Sql("DROP TABLE IF EXISTS ?.installs_final"),
    Step::Built(installs_final7),
];

/// Version 8: `install_first` holds, per install, the first receipt of its events (a row per install and
/// inserted block, fed by `install_first_mv`; the earliest counts). `events` is partitioned by day and
/// sorted by `execution_id`, and the scripts' ids are random, so a lookup of a few installs by id finds
/// a match in almost every part of every day: a settle merged its installs from a read of nearly all of
/// `events`, every settle, a cost that grew with the history. From version 8 a settle reads the first
/// receipt of its installs here (a small table sorted by id, not partitioned) and reads `events` from
/// that day on only, and the rows of `installs_settled` from that second on only (`crate::clickhouse::
/// settle`). The upgrade creates the view first, then copies the first receipt of every install from
/// `events`; an insert in between is counted twice, which the earliest-wins read does not mind.
const V8: &[Step] = &[
    Step::Sql(INSTALL_FIRST),
    Step::Sql(INSTALL_FIRST_MV),
    Step::Sql(
        "INSERT INTO ?.install_first SELECT execution_id, min(received_ms) AS first_ms FROM ?.events \
GROUP BY execution_id",
    ),
    Step::Sql("DROP TABLE IF EXISTS ?.installs_final"),
    Step::Built(installs_final8),
];

/// The first receipt (Unix milliseconds) of each install's events: a row per install and inserted block.
/// Small granules: a settle looks up a few ids in it.
const INSTALL_FIRST: &str = "CREATE TABLE IF NOT EXISTS ?.install_first (
    execution_id String,
    first_ms UInt64
) ENGINE = MergeTree
ORDER BY execution_id
SETTINGS index_granularity = 1024";

/// Feeds `install_first` from every block inserted into `events`.
const INSTALL_FIRST_MV: &str =
    "CREATE MATERIALIZED VIEW IF NOT EXISTS ?.install_first_mv TO ?.install_first AS
SELECT execution_id, min(received_ms) AS first_ms FROM ?.events GROUP BY execution_id";

/// Re-settled installs whose rows started at more than one moment: `installs_final` picks their newest
/// row with `LIMIT 1 BY` (schema version 7). Marked by a settle before it records its watermark.
const INSTALLS_MOVED: &str = "CREATE TABLE IF NOT EXISTS ?.installs_moved (
    execution_id String
) ENGINE = ReplacingMergeTree
ORDER BY execution_id";

/// Marks every re-settled install whose rows started at more than one moment and that is not marked yet
/// (the settle job runs it too, when it starts).
pub const MARK_MOVED: &str =
    "INSERT INTO ?.installs_moved SELECT execution_id FROM ?.installs_settled \
WHERE execution_id IN (SELECT execution_id FROM ?.installs_resettled) \
GROUP BY execution_id HAVING uniqExact(started_at) > 1 \
AND execution_id NOT IN (SELECT execution_id FROM ?.installs_moved)";

/// Rows inserted into `installs_settled` per day they started on, and deletions of retention per first
/// day they touched (the table keeps its name from blocks: either is one change from that day on).
const SETTLED_BLOCKS: &str = "CREATE TABLE IF NOT EXISTS ?.settled_blocks (
    low UInt32,
    blocks UInt64
) ENGINE = SummingMergeTree
ORDER BY low";

/// The rows a settle inserted into `installs_settled` (version = its watermark), counted under the UTC
/// day their installs started on; the settle job runs it before it records the watermark. `{from}`: a
/// second no row of the settle started before (the first receipt of its installs' events), so that
/// only that part of the table is read.
pub const SETTLED_BLOCKS_OF_SETTLE: &str = "INSERT INTO ?.settled_blocks (low, blocks)
SELECT toUInt32(intDiv(toUInt32(started_at), 86400)) AS low, toUInt64(count()) AS blocks
FROM ?.installs_settled WHERE started_at >= toDateTime({from}) AND version = toDateTime({version})
GROUP BY low";

/// The answer of a pass for one UTC day, per repo, slug and (for per-app passes) app, per snapshot.
const DAY_ROLLUPS: &str = "CREATE TABLE IF NOT EXISTS ?.day_rollups (
    pass String,
    snapshot UInt64,
    day UInt32,
    repo_source String,
    repo_slug String,
    nsapp String,
    dim String,
    key String,
    n UInt64,
    s0 UInt64,
    s1 UInt64,
    s2 UInt64,
    s3 UInt64,
    s4 UInt64,
    s5 UInt64,
    s6 UInt64,
    s7 UInt64,
    first UInt32
) ENGINE = MergeTree
ORDER BY (pass, nsapp, day, snapshot)";

/// The complete snapshots: the first day and the number of days (1, or a span of
/// `schema::rollup::SPAN_DAYS`) of a pass, the change count of its last day it was taken at, and its id.
const DAY_ROLLUP_INDEX: &str = "CREATE TABLE IF NOT EXISTS ?.day_rollup_index (
    pass String,
    day UInt32,
    days UInt32,
    changes UInt64,
    snapshot UInt64,
    taken_at DateTime DEFAULT now()
) ENGINE = MergeTree
ORDER BY (pass, day)";

/// `installs_settled` still has the sorting key of version 4.
const SETTLED_BY_ID: &str = "SELECT toUInt64(count()) FROM system.tables
WHERE database = ? AND name = 'installs_settled' AND sorting_key = 'execution_id'";

/// The table of version 4, renamed by version 5's swap, is still there.
const SETTLED_V4_LEFT: &str = "SELECT toUInt64(count()) FROM system.tables
WHERE database = ? AND name = 'installs_settled_v4'";

/// `installs_settled` of version 5 (the same columns, another sorting key), before the swap.
const INSTALLS_SETTLED_NEXT: &str =
    "CREATE TABLE IF NOT EXISTS ?.installs_settled_next AS ?.installs_settled
ENGINE = ReplacingMergeTree(version)
ORDER BY (started_at, execution_id)";

/// Marks every install with more than one settled row and not marked yet (the settle job runs it too).
pub const MARK_RESETTLED: &str =
    "INSERT INTO ?.installs_resettled SELECT execution_id FROM ?.installs_settled \
GROUP BY execution_id HAVING count() > 1 \
AND execution_id NOT IN (SELECT execution_id FROM ?.installs_resettled)";

/// When ClickHouse received something about an install: a row per install and inserted block, with the
/// server's clock at the insert (a writer's backlog inserts old events late; `received_at` would not say).
const INSTALL_TOUCHES: &str = "CREATE TABLE IF NOT EXISTS ?.install_touches (
    touched_at DateTime,
    execution_id String
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(touched_at)
ORDER BY (touched_at, execution_id)";

/// Feeds `install_touches` from every block inserted into `events`: one row per install of the block.
const INSTALL_TOUCHES_MV: &str =
    "CREATE MATERIALIZED VIEW IF NOT EXISTS ?.install_touches_mv TO ?.install_touches AS
SELECT now() AS touched_at, execution_id FROM ?.events GROUP BY execution_id";

/// The watermarks of completed settles; the current one is the largest.
const SETTLE_WATERMARK: &str = "CREATE TABLE IF NOT EXISTS ?.settle_watermark (
    watermark DateTime,
    settled_at DateTime DEFAULT now(),
    installs UInt64 DEFAULT 0
) ENGINE = MergeTree
ORDER BY watermark";

/// The installs settled so far, in the columns of `installs_final`, one row per install and settle (the
/// settle's watermark is its `version`). ReplacingMergeTree folds an install's older rows away in the
/// background; readers never rely on it (`installs_resettled` says which installs may have several rows).
const INSTALLS_SETTLED: &str = "CREATE TABLE IF NOT EXISTS ?.installs_settled (
    execution_id String,
    random_id String,
    type String,
    nsapp String,
    repo_source String,
    status String,
    is_final UInt8,
    exit_code Nullable(UInt8),
    error Nullable(String),
    error_category Nullable(String),
    error_signature Nullable(String),
    started_at DateTime,
    last_seen_at DateTime,
    finished_at Nullable(DateTime),
    duration Nullable(UInt32),
    ct_type Nullable(UInt8),
    disk_size Nullable(UInt32),
    core_count Nullable(UInt16),
    ram_size Nullable(UInt32),
    install_duration Nullable(UInt32),
    os_type Nullable(String),
    os_version Nullable(String),
    pve_version Nullable(String),
    method Nullable(String),
    cpu_vendor Nullable(String),
    cpu_model Nullable(String),
    gpu_vendor Nullable(String),
    gpu_model Nullable(String),
    gpu_passthrough Nullable(String),
    ram_speed Nullable(String),
    events UInt64,
    repo_slug Nullable(String),
    has_arm Nullable(UInt8),
    arch Nullable(String),
    version DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY execution_id";

/// Installs that have (or may have) more than one row in `installs_settled`: readers take the newest.
/// Marked by a settle before it records its watermark.
const INSTALLS_RESETTLED: &str = "CREATE TABLE IF NOT EXISTS ?.installs_resettled (
    execution_id String
) ENGINE = ReplacingMergeTree
ORDER BY execution_id";

/// The first watermark: the moment the touches started being recorded (once; a rerun keeps it).
const PICK_WATERMARK: &str = "INSERT INTO ?.settle_watermark (watermark)
SELECT now() FROM system.one WHERE (SELECT count() FROM ?.settle_watermark) = 0";

/// Every install as version 3's `installs_final` shows it, at the first watermark.
const BACKFILL_SETTLED: &str = "INSERT INTO ?.installs_settled
SELECT *, (SELECT max(watermark) FROM ?.settle_watermark) AS version
FROM ?.installs_final
WHERE execution_id NOT IN (SELECT execution_id FROM ?.installs_settled)";

/// The columns of `installs_final`, in its order.
macro_rules! final_columns {
    () => {
        "execution_id, random_id, type, nsapp, repo_source, status, is_final, exit_code, error, error_category, \
error_signature, started_at, last_seen_at, finished_at, duration, ct_type, disk_size, core_count, ram_size, \
install_duration, os_type, os_version, pve_version, method, cpu_vendor, cpu_model, gpu_vendor, gpu_model, \
gpu_passthrough, ram_speed, events, repo_slug, has_arm, arch"
    };
}

/// The installs touched since the current watermark.
macro_rules! touched_since_watermark {
    () => {
        "SELECT execution_id FROM ?.install_touches WHERE touched_at >= (SELECT max(watermark) FROM ?.settle_watermark)"
    };
}

/// The merged install, in the columns of `installs_final`, of every install with an event matching
/// `{where}` (a filter on `execution_id`), merged from all its events: the rules of version 3 (owner
/// `random_id`, `schema::merge::forged`) and of version 2 for every event (the plain aggregates of
/// `installs_mv3`'s states, then `INSTALLS_FINAL3`'s choice of the owner and its output).
pub const INSTALLS_OF_EVENTS: &str = "SELECT
    execution_id,
    random_id,
    type,
    nsapp,
    repo_source,
    status,
    is_final,
    if(is_final = 0 OR exit_code_raw = -1, NULL, toUInt8(exit_code_raw)) AS exit_code,
    if(is_final = 0 OR error_raw = '', NULL, error_raw) AS error,
    if(is_final = 0 OR error_category_raw = '', NULL, error_category_raw) AS error_category,
    if(is_final = 0 OR error_signature_raw = '', NULL, error_signature_raw) AS error_signature,
    toDateTime(intDiv(first_ms, 1000)) AS started_at,
    toDateTime(intDiv(last_ms, 1000)) AS last_seen_at,
    if(is_final = 0, NULL, toDateTime(intDiv(finished_ms_raw, 1000))) AS finished_at,
    if(reported_duration_raw != -1, toUInt32(reported_duration_raw), if(is_final = 0, NULL, toUInt32(intDiv(finished_ms_raw - first_ms, 1000)))) AS duration,
    if(ct_type_raw = -1, NULL, toUInt8(ct_type_raw)) AS ct_type,
    if(disk_size_raw = -1, NULL, toUInt32(disk_size_raw)) AS disk_size,
    if(core_count_raw = -1, NULL, toUInt16(core_count_raw)) AS core_count,
    if(ram_size_raw = -1, NULL, toUInt32(ram_size_raw)) AS ram_size,
    if(reported_duration_raw = -1, NULL, toUInt32(reported_duration_raw)) AS install_duration,
    if(os_type_raw = '', NULL, os_type_raw) AS os_type,
    if(os_version_raw = '', NULL, os_version_raw) AS os_version,
    if(pve_version_raw = '', NULL, pve_version_raw) AS pve_version,
    if(method_raw = '', NULL, method_raw) AS method,
    if(cpu_vendor_raw = '', NULL, cpu_vendor_raw) AS cpu_vendor,
    if(cpu_model_raw = '', NULL, cpu_model_raw) AS cpu_model,
    if(gpu_vendor_raw = '', NULL, gpu_vendor_raw) AS gpu_vendor,
    if(gpu_model_raw = '', NULL, gpu_model_raw) AS gpu_model,
    if(gpu_passthrough_raw = '', NULL, gpu_passthrough_raw) AS gpu_passthrough,
    if(ram_speed_raw = '', NULL, ram_speed_raw) AS ram_speed,
    events,
    if(repo_slug_raw = '', NULL, repo_slug_raw) AS repo_slug,
    if(has_arm_raw = '', NULL, toUInt8(has_arm_raw = '1')) AS has_arm,
    if(arch_raw = '', NULL, arch_raw) AS arch
FROM (
    SELECT
        execution_id,
        argMin(c_random_id, first_event) AS random_id,
        argMin(c_type, first_event) AS type,
        argMin(c_nsapp, first_event) AS nsapp,
        argMin(c_repo_source, first_event) AS repo_source,
        argMin(c_status, first_event) AS status,
        argMin(c_is_final, first_event) AS is_final,
        argMin(c_finished_ms_raw, first_event) AS finished_ms_raw,
        argMin(c_exit_code_raw, first_event) AS exit_code_raw,
        argMin(c_error_raw, first_event) AS error_raw,
        argMin(c_error_category_raw, first_event) AS error_category_raw,
        argMin(c_error_signature_raw, first_event) AS error_signature_raw,
        argMin(c_first_ms, first_event) AS first_ms,
        argMin(c_last_ms, first_event) AS last_ms,
        argMin(c_ct_type_raw, first_event) AS ct_type_raw,
        argMin(c_disk_size_raw, first_event) AS disk_size_raw,
        argMin(c_core_count_raw, first_event) AS core_count_raw,
        argMin(c_ram_size_raw, first_event) AS ram_size_raw,
        argMin(c_reported_duration_raw, first_event) AS reported_duration_raw,
        argMin(c_os_type_raw, first_event) AS os_type_raw,
        argMin(c_os_version_raw, first_event) AS os_version_raw,
        argMin(c_pve_version_raw, first_event) AS pve_version_raw,
        argMin(c_method_raw, first_event) AS method_raw,
        argMin(c_cpu_vendor_raw, first_event) AS cpu_vendor_raw,
        argMin(c_cpu_model_raw, first_event) AS cpu_model_raw,
        argMin(c_gpu_vendor_raw, first_event) AS gpu_vendor_raw,
        argMin(c_gpu_model_raw, first_event) AS gpu_model_raw,
        argMin(c_gpu_passthrough_raw, first_event) AS gpu_passthrough_raw,
        argMin(c_ram_speed_raw, first_event) AS ram_speed_raw,
        argMin(c_events, first_event) AS events,
        argMin(c_repo_slug_raw, first_event) AS repo_slug_raw,
        argMin(c_has_arm_raw, first_event) AS has_arm_raw,
        argMin(c_arch_raw, first_event) AS arch_raw
    FROM (
        SELECT
            execution_id,
            min(toString(event_id)) AS first_event,
            random_id AS c_random_id,
            argMin(type, toString(event_id)) AS c_type,
            argMin(nsapp, toString(event_id)) AS c_nsapp,
            argMin(repo_source, toString(event_id)) AS c_repo_source,
            argMin(status, concat(toString(4 - {score}), toString(event_id))) AS c_status,
            max(toUInt8(status IN ('success', 'failed', 'aborted', 'unknown'))) AS c_is_final,
            argMin(received_ms, if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS c_finished_ms_raw,
            argMin(ifNull(toInt64(exit_code), -1), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS c_exit_code_raw,
            argMin(ifNull(error, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS c_error_raw,
            argMin(ifNull(error_category, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS c_error_category_raw,
            argMin(ifNull(error_signature, ''), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS c_error_signature_raw,
            min(received_ms) AS c_first_ms,
            max(received_ms) AS c_last_ms,
            argMin(ifNull(toInt64(ct_type), -1), concat(if(isNull(ct_type), '2', '0'), toString(event_id))) AS c_ct_type_raw,
            argMin(ifNull(toInt64(disk_size), -1), concat(if(isNull(disk_size), '2', '0'), toString(event_id))) AS c_disk_size_raw,
            argMin(ifNull(toInt64(core_count), -1), concat(if(isNull(core_count), '2', '0'), toString(event_id))) AS c_core_count_raw,
            argMin(ifNull(toInt64(ram_size), -1), concat(if(isNull(ram_size), '2', '0'), toString(event_id))) AS c_ram_size_raw,
            argMin(ifNull(toInt64(install_duration), -1), concat(if(isNull(install_duration), '2', '0'), toString(event_id))) AS c_first_duration_raw,
            max(ifNull(toInt64(install_duration) + 1, toInt64(0))) - 1 AS c_longest_duration_raw,
            argMin(if(status IN ('success', 'failed', 'aborted', 'unknown'), ifNull(toInt64(install_duration), -1), toInt64(-1)), if(status IN ('success', 'failed', 'aborted', 'unknown'), concat(toString(4 - {score}), toString(event_id)), 'z')) AS c_outcome_duration_raw,
            if(c_is_final = 1 AND c_outcome_duration_raw != -1, c_outcome_duration_raw, greatest(c_longest_duration_raw, c_first_duration_raw)) AS c_reported_duration_raw,
            argMin(ifNull(os_type, ''), concat(if(isNull(os_type), '2', '0'), toString(event_id))) AS c_os_type_raw,
            argMin(ifNull(os_version, ''), concat(if(isNull(os_version), '2', '0'), toString(event_id))) AS c_os_version_raw,
            argMin(ifNull(pve_version, ''), concat(if(isNull(pve_version), '2', '0'), toString(event_id))) AS c_pve_version_raw,
            argMin(ifNull(method, ''), concat(if(isNull(method), '2', '0'), toString(event_id))) AS c_method_raw,
            argMin(ifNull(cpu_vendor, ''), concat(multiIf(isNull(cpu_vendor), '2', cpu_vendor = 'unknown', '1', '0'), toString(event_id))) AS c_cpu_vendor_raw,
            argMin(ifNull(cpu_model, ''), concat(if(isNull(cpu_model), '2', '0'), toString(event_id))) AS c_cpu_model_raw,
            argMin(ifNull(gpu_vendor, ''), concat(multiIf(isNull(gpu_vendor), '2', gpu_vendor = 'unknown', '1', '0'), toString(event_id))) AS c_gpu_vendor_raw,
            argMin(ifNull(gpu_model, ''), concat(if(isNull(gpu_model), '2', '0'), toString(event_id))) AS c_gpu_model_raw,
            argMin(ifNull(gpu_passthrough, ''), concat(multiIf(isNull(gpu_passthrough), '2', gpu_passthrough = 'unknown', '1', '0'), toString(event_id))) AS c_gpu_passthrough_raw,
            argMin(ifNull(ram_speed, ''), concat(if(isNull(ram_speed), '2', '0'), toString(event_id))) AS c_ram_speed_raw,
            uniqExact(toString(event_id)) AS c_events,
            argMin(ifNull(repo_slug, ''), concat(if(isNull(repo_slug), '2', '0'), toString(event_id))) AS c_repo_slug_raw,
            argMin(ifNull(toString(has_arm), ''), concat(if(isNull(has_arm), '2', '0'), toString(event_id))) AS c_has_arm_raw,
            argMin(ifNull(arch, ''), concat(if(isNull(arch), '2', '0'), toString(event_id))) AS c_arch_raw
        FROM ?.events
        WHERE {where}
        GROUP BY execution_id, random_id
    )
    GROUP BY execution_id
)";

/// The installs settled once (not marked in `installs_resettled`) and not touched since the watermark:
/// their settled row up to the watermark (`touched`: the installs touched since it).
fn settled_once(touched: &str) -> String {
    format!(
        "SELECT {columns} FROM ?.installs_settled
WHERE version <= (SELECT max(watermark) FROM ?.settle_watermark)
    AND execution_id NOT IN ({touched})
    AND execution_id NOT IN (SELECT execution_id FROM ?.installs_resettled)",
        columns = final_columns!()
    )
}

/// The newest settled row, up to the watermark, of every install marked in `marks` and not touched since
/// the watermark, by `LIMIT 1 BY` (which no outer filter gets below).
fn newest_row_of(marks: &str, touched: &str) -> String {
    format!(
        "SELECT {columns} FROM (
    SELECT * FROM ?.installs_settled
    WHERE execution_id IN (SELECT execution_id FROM ?.{marks})
        AND version <= (SELECT max(watermark) FROM ?.settle_watermark)
        AND execution_id NOT IN ({touched})
    ORDER BY execution_id, version DESC
    LIMIT 1 BY execution_id
)",
        columns = final_columns!()
    )
}

/// The merged state of each install (version 4): the newest settled row, up to the watermark, of every
/// install not touched since the watermark (one branch for installs settled once, one for those settled
/// again), and the merge from `events` of the installs touched since. Same columns and values as version 3.
fn installs_final4() -> String {
    let touched = touched_since_watermark!();
    let settled = settled_once(touched);
    let resettled = newest_row_of("installs_resettled", touched);
    let fresh = installs_of_events(&format!("execution_id IN ({touched})"));
    format!(
        "CREATE VIEW IF NOT EXISTS ?.installs_final AS\n{settled}\nUNION ALL\n{resettled}\nUNION ALL\n{fresh}"
    )
}

/// The merged state of each install (version 7): as version 4 ([`installs_final4`]), with the
/// re-settled installs split in two. Those whose rows all started at the same moment keep each column
/// of their newest row through a `GROUP BY execution_id, started_at`, which a period's filter reaches;
/// those whose start moved (`installs_moved`) keep version 4's `LIMIT 1 BY`.
fn installs_final7() -> String {
    installs_final_grouped(false)
}

/// Version 8: version 7's view, whose merge of the installs touched since the watermark reads `events`
/// only from the first receipt of their events on (`install_first`): by id alone it read a granule of
/// nearly every part of `events` in every read of the view, as the scripts' ids are random.
fn installs_final8() -> String {
    installs_final_grouped(true)
}

/// The view of versions 7 and 8 (`first_bound`: the merge from `events` reads from the first receipt of
/// the touched installs on).
fn installs_final_grouped(first_bound: bool) -> String {
    let touched = touched_since_watermark!();
    let settled = settled_once(touched);
    // One `argMax` of a tuple: an aggregate function of a Nullable column alone skips NULLs, so it would
    // keep an older row's value where the newest row has none.
    let kept: Vec<&str> = final_columns!()
        .split(", ")
        .filter(|c| !matches!(*c, "execution_id" | "started_at"))
        .collect();
    let mut n = 0;
    let outer: Vec<String> = final_columns!()
        .split(", ")
        .map(|c| match c {
            "execution_id" | "started_at" => c.to_string(),
            _ => {
                n += 1;
                format!("tupleElement(newest, {n}) AS {c}")
            }
        })
        .collect();
    let resettled = format!(
        "SELECT {outer} FROM (
    SELECT execution_id, started_at, argMax(tuple({kept}), version) AS newest FROM ?.installs_settled
    WHERE execution_id IN (SELECT execution_id FROM ?.installs_resettled)
        AND execution_id NOT IN (SELECT execution_id FROM ?.installs_moved)
        AND version <= (SELECT max(watermark) FROM ?.settle_watermark)
        AND execution_id NOT IN ({touched})
    GROUP BY execution_id, started_at
)",
        outer = outer.join(", "),
        kept = kept.join(", ")
    );
    let moved = newest_row_of("installs_moved", touched);
    let ids = format!("execution_id IN ({touched})");
    let fresh = if first_bound {
        installs_of_events(&from_first_receipt(&ids))
    } else {
        installs_of_events(&ids)
    };
    format!(
        "CREATE VIEW IF NOT EXISTS ?.installs_final AS\n{settled}\nUNION ALL\n{resettled}\nUNION ALL\n{moved}\nUNION ALL\n{fresh}"
    )
}

/// `ids` (a filter on `execution_id`), on the events received from the first receipt of those installs'
/// events on (`install_first`, version 8): ClickHouse evaluates the scalar subquery before it picks the
/// partitions of `events` to read.
fn from_first_receipt(ids: &str) -> String {
    format!(
        "received_at >= (SELECT toDateTime(intDiv(min(first_ms), 1000)) FROM ?.install_first WHERE {ids}) \
AND {ids}"
    )
}

/// [`INSTALLS_OF_EVENTS`] for the installs with an event matching `filter` (constants of this crate and
/// numbers only).
pub fn installs_of_events(filter: &str) -> String {
    INSTALLS_OF_EVENTS.replace("{where}", filter)
}

/// Every event once, even before ReplacingMergeTree folded redelivered copies.
const EVENTS_FINAL: &str =
    "CREATE VIEW IF NOT EXISTS ?.events_final AS SELECT * FROM ?.events FINAL";

/// The status score of `schema::merge::status_score` as a ClickHouse expression over `status`.
pub fn status_score_sql() -> String {
    let mut sql = String::from("multiIf(");
    for status in Status::ALL {
        sql.push_str(&format!(
            "status = '{}', {}, ",
            status.as_str(),
            status_score(status)
        ));
    }
    sql.push_str("0)");
    sql
}

/// A statement ready to bind: `{score}` filled in. Only constants of this crate reach the text.
pub fn render(statement: &str) -> String {
    statement.replace("{score}", &status_score_sql())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_score_sql_mirrors_the_merge() {
        assert_eq!(
            status_score_sql(),
            "multiIf(status = 'installing', 0, status = 'validation', 1, status = 'configuring', 2, \
             status = 'success', 4, status = 'failed', 4, status = 'aborted', 4, status = 'unknown', 3, 0)"
        );
    }

    #[test]
    fn the_last_migration_is_the_version_the_web_waits_for() {
        assert_eq!(
            MIGRATIONS.last().map(|m| m.version),
            Some(schema::names::CLICKHOUSE_SCHEMA_VERSION),
            "a new migration raises schema::names::CLICKHOUSE_SCHEMA_VERSION with it"
        );
    }

    #[test]
    fn versions_increase_and_statements_are_idempotent() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "{}", m.name);
            last = m.version;
            for step in m.steps {
                let sql = step.sql();
                assert!(!sql.contains('{'), "{sql}");
                match step {
                    // A backfill writes idempotent states only: a second run changes nothing.
                    Step::Sql(s) => assert!(
                        s.contains("IF NOT EXISTS")
                            || s.starts_with("DROP TABLE IF EXISTS")
                            || s.starts_with("INSERT INTO ?.installs_by_random_id\nSELECT")
                            // Version 4: once (the first watermark) or only what is missing.
                            || s.ends_with("(SELECT count() FROM ?.settle_watermark) = 0")
                            || s.ends_with(
                                "WHERE execution_id NOT IN (SELECT execution_id FROM ?.installs_settled)"
                            )
                            // Version 5: only installs with several rows not marked yet.
                            || s.ends_with("NOT IN (SELECT execution_id FROM ?.installs_resettled)")
                            // Version 7: only moved installs not marked yet.
                            || s.ends_with("NOT IN (SELECT execution_id FROM ?.installs_moved)")
                            // Version 8: a second run adds copies of the same first receipts, and
                            // `install_first` is read as the earliest per install.
                            || s.starts_with("INSERT INTO ?.install_first SELECT"),
                        "{s}"
                    ),
                    Step::Built(_) => assert!(sql.contains("IF NOT EXISTS"), "{sql}"),
                    Step::AddColumn { .. } => assert!(sql.starts_with("ALTER TABLE ?."), "{sql}"),
                    Step::When { when, .. } => {
                        assert!(when.starts_with("SELECT toUInt64(count()) FROM system.tables"))
                    }
                }
            }
        }
    }

    /// Version 2 adds columns to what version 1 made and never drops a table that holds data.
    #[test]
    fn version_2_adds_columns_and_drops_only_views() {
        let v2 = &MIGRATIONS[1];
        for step in v2.steps {
            if let Step::Sql(s) = step {
                if s.starts_with("DROP") {
                    assert!(
                        s.ends_with(".installs_mv") || s.ends_with(".installs_final"),
                        "{s}"
                    );
                }
            }
        }
        let added: Vec<&str> = v2
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::AddColumn { table, column, .. } => {
                    Some(if *table == "events" { *column } else { "" })
                }
                Step::Sql(_) | Step::Built(_) | Step::When { .. } => None,
            })
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(added, ["repo_slug", "has_arm", "arch"]);
        // Every state column of `installs` is fed by the view of version 2 (18.16 requires it).
        for step in MIGRATIONS.iter().flat_map(|m| m.steps) {
            let state = match step {
                Step::AddColumn {
                    table: "installs",
                    column,
                    ..
                } => column.to_string(),
                _ => continue,
            };
            assert!(INSTALLS_MV2.contains(&format!("AS {state}")), "{state}");
        }
        for line in INSTALLS.lines().filter(|l| l.contains("_state ")) {
            let state = line.split_whitespace().next().expect("column");
            assert!(INSTALLS_MV2.contains(&format!("AS {state}")), "{state}");
        }
    }

    /// Version 4: `installs_settled` holds the columns of `installs_final` in its order, then `version`
    /// (the backfill and the settle job insert positionally), the merge of events produces them in that
    /// order, and the only tables it drops are views.
    #[test]
    fn version_4_settles_every_column_of_installs_final_in_order() {
        let v4 = &MIGRATIONS[3];
        assert_eq!(v4.version, 4);
        for step in v4.steps {
            if let Step::Sql(s) = step {
                if s.starts_with("DROP") {
                    assert!(
                        [".installs_final", ".installs_mv2", ".installs_mv3"]
                            .iter()
                            .any(|v| s.ends_with(v)),
                        "{s}"
                    );
                }
            }
        }
        let settled: Vec<&str> = INSTALLS_SETTLED
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("    "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let columns: Vec<&str> = final_columns!().split(", ").collect();
        assert_eq!(columns.len(), 34);
        assert_eq!(settled[..columns.len()], columns[..]);
        assert_eq!(settled[columns.len()..], ["version"]);
        let head = &INSTALLS_OF_EVENTS[..INSTALLS_OF_EVENTS.find("\nFROM (").expect("FROM")];
        let produced: Vec<&str> = head
            .lines()
            .skip(1)
            .map(|l| {
                let l = l.trim().trim_end_matches(',');
                l.rsplit(" AS ").next().unwrap_or(l)
            })
            .collect();
        assert_eq!(produced, columns);
        let view = installs_final4();
        assert_eq!(view.matches("UNION ALL").count(), 2, "{view}");
        assert!(!render(&view).contains('{'), "{view}");
        let bounded = installs_final8();
        assert_eq!(
            bounded.matches("FROM ?.install_first").count(),
            1,
            "{bounded}"
        );
        assert!(!render(&bounded).contains('{'), "{bounded}");
        let view = installs_final7();
        let ids = format!("execution_id IN ({})", touched_since_watermark!());
        assert_eq!(
            bounded.replace(&from_first_receipt(&ids), &ids),
            view,
            "version 8's view is version 7's with the bound"
        );
        assert_eq!(view.matches("UNION ALL").count(), 3, "{view}");
        assert!(!render(&view).contains('{'), "{view}");
        // The re-settled branch keeps every column but the two it groups by, in the view's order.
        assert_eq!(
            view.matches("tupleElement(newest, ").count(),
            columns.len() - 2
        );
        assert!(view.contains("tupleElement(newest, 32) AS arch"), "{view}");
    }

    /// Version 3 creates a table and views, drops only `installs_final`, and its view and backfills
    /// produce every state column of the new table, in the table's order (INSERT … SELECT is positional).
    #[test]
    fn version_3_feeds_every_column_of_installs_by_random_id() {
        let v3 = &MIGRATIONS[2];
        assert_eq!(v3.version, 3);
        for step in v3.steps {
            if let Step::Sql(s) = step {
                if s.starts_with("DROP") {
                    assert!(s.ends_with(".installs_final"), "{s}");
                }
            }
        }
        let columns: Vec<&str> = INSTALLS_BY_RANDOM_ID
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("    "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(columns.len(), 38, "{columns:?}");
        for select in [
            INSTALLS_MV3,
            BACKFILL_ONE_RANDOM_ID,
            BACKFILL_SEVERAL_RANDOM_IDS,
            BACKFILL_ONE_RANDOM_ID_LAST_DAY,
            BACKFILL_SEVERAL_RANDOM_IDS_LAST_DAY,
        ] {
            let produced: Vec<&str> = select
                .lines()
                .filter(|l| l.starts_with("    "))
                .map(|l| {
                    let l = l.trim().trim_end_matches(',');
                    l.rsplit(" AS ").next().unwrap_or(l)
                })
                .collect();
            assert_eq!(produced, columns, "{select}");
        }
    }
}
