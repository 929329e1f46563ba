-- Seeds `telemetry.events` (and, through the writer's materialized views, its install tables) with
-- {INSTALLS} installs of 4 events each, started uniformly over the last {DAYS} days, straight from
-- numbers(): no network, no client. Used by deploy/bench/web.sh; {INSTALLS}, {DAYS} and {OFFSET} are
-- replaced by the script (numbers only). Every figure is a function of the install number, so a run is
-- reproducible. Valid on ClickHouse 18.16 and current releases. The columns are named: a column a later
-- migration of the writer adds gets its default until this seed fills it. Since version 4 the insert
-- feeds `events` and `install_touches` only: every seeded install is merged from `events` at read time
-- until the writer's settle job has settled it (deploy/bench/web.sh waits for that); on a database of
-- version 3 (CLICKHOUSE_MIGRATE_TO=3, deploy/bench/views.sh) the views of version 3 fill its install
-- tables. Every install has one random_id, so it is its own owner.
INSERT INTO telemetry.events (event_id, received_at, received_ms, execution_id, random_id, type, nsapp, status,
    ct_type, disk_size, core_count, ram_size, os_type, os_version, pve_version, method, exit_code, error,
    error_category, error_signature, install_duration, cpu_vendor, cpu_model, gpu_vendor, gpu_model,
    gpu_passthrough, ram_speed, repo_source, synthetic, rescued, repo_slug, has_arm, arch)
SELECT
    toUUID(concat(substring(ms_hex, 1, 8), '-', substring(ms_hex, 9, 4), '-7', substring(rnd, 1, 3), '-8',
                  substring(rnd, 4, 3), '-', substring(rnd, 5, 12))) AS event_id,
    toDateTime(intDiv(received_ms, 1000)) AS received_at,
    toUInt64(received_ms) AS received_ms,
    concat('seed-', toString(install)) AS execution_id,
    concat('seed-', toString(install)) AS random_id,
    kind AS type,
    nsapp,
    status,
    if(step = 0, toUInt8(h % 2), NULL) AS ct_type,
    if(step = 0, toUInt32(arrayElement([4, 8, 16, 32, 64], (h % 5) + 1)), NULL) AS disk_size,
    if(step = 0, toUInt16(arrayElement([1, 2, 2, 4, 8], (intDiv(h, 5) % 5) + 1)), NULL) AS core_count,
    if(step = 0, toUInt32(arrayElement([512, 1024, 2048, 4096, 8192], (intDiv(h, 25) % 5) + 1)), NULL) AS ram_size,
    if(step = 0, arrayElement(['debian', 'ubuntu', 'alpine', 'fedora'], (intDiv(h, 125) % 4) + 1), NULL) AS os_type,
    if(step = 0, arrayElement(['12', '13', '24.04', '3.22'], (intDiv(h, 500) % 4) + 1), NULL) AS os_version,
    if(step = 0, arrayElement(['8.4.1', '9.0.3', '8.3.5', '9.1.0'], (intDiv(h, 2000) % 4) + 1), NULL) AS pve_version,
    if(step = 0, arrayElement(['default', 'advanced', 'mydefaults-global'], (intDiv(h, 8000) % 3) + 1), NULL) AS method,
    if(is_final AND status IN ('failed', 'aborted', 'unknown'), toUInt8(code), NULL) AS exit_code,
    if(is_final AND status IN ('failed', 'aborted', 'unknown'),
       concat('Exit code ', toString(code), ': seeded failure\nE: step ', toString(code % 7), ' failed'), NULL) AS error,
    if(is_final AND status IN ('failed', 'aborted', 'unknown'), category, NULL) AS error_category,
    if(is_final AND status IN ('failed', 'aborted', 'unknown'), concat('E: step ', toString(code % 7), ' failed'), NULL) AS error_signature,
    if(is_final AND status != 'unknown', toUInt32(60 + h % 600), NULL) AS install_duration,
    if(step = 0, arrayElement(['intel', 'amd', 'arm'], (intDiv(h, 24000) % 3) + 1), NULL) AS cpu_vendor,
    if(step = 0, 'Seeded CPU', NULL) AS cpu_model,
    if(step = 0, arrayElement(['intel', 'amd', 'nvidia', 'unknown'], (intDiv(h, 72000) % 4) + 1), NULL) AS gpu_vendor,
    NULL AS gpu_model,
    if(step = 0, arrayElement(['none', 'igpu', 'dgpu'], (intDiv(h, 288000) % 3) + 1), NULL) AS gpu_passthrough,
    NULL AS ram_speed,
    arrayElement(['ProxmoxVE', 'ProxmoxVE', 'ProxmoxVE', 'ProxmoxVED', 'external'], (intDiv(h, 864000) % 5) + 1) AS repo_source,
    toUInt8(0) AS synthetic,
    emptyArrayString() AS rescued,
    -- Version 2's fields, sent by the newer scripts (every other install) on their first event.
    if(step = 0 AND h % 2 = 0 AND repo_source != 'external', concat('community-scripts/', repo_source), NULL) AS repo_slug,
    if(step = 0 AND h % 2 = 0, toUInt8(intDiv(h, 7) % 10 = 0), NULL) AS has_arm,
    if(step = 0 AND h % 2 = 0, if(intDiv(h, 7) % 10 = 0, 'arm64', 'amd64'), NULL) AS arch
FROM
(
    SELECT
        install, step, h, kind, nsapp, code, category,
        step = 3 AND outcome != 'none' AS is_final,
        multiIf(step = 0, 'installing', step = 1, 'validation', step = 2, 'configuring',
                outcome = 'none', 'configuring', outcome) AS status,
        start_ms + step * 20000 + if(step = 3, 60000 + (h % 600) * 1000, 0) AS received_ms,
        lower(hex(toUInt64(received_ms))) AS ms_hex,
        lower(hex(bitOr(intHash64(number), toUInt64(9223372036854775808)))) AS rnd
    FROM
    (
        SELECT
            number,
            intDiv(number, 4) + {OFFSET} AS install,
            number % 4 AS step,
            intHash64(install) AS h,
            toUInt64(toUnixTimestamp(now())) * 1000 - {DAYS} * 86400000 + 60000 + (h % ({DAYS} * 86400000 - 3600000)) AS start_ms,
            arrayElement(['lxc', 'lxc', 'lxc', 'vm', 'pve', 'addon'], (intDiv(h, 3) % 6) + 1) AS kind,
            toUInt32(pow((intDiv(h, 11) % 1000000) / 1000000, 3) * 300) AS app_idx,
            if(app_idx < 8, arrayElement(['docker', 'homeassistant', 'pihole', 'jellyfin', 'nginxproxymanager',
                                          'vaultwarden', 'plex', 'adguard'], app_idx + 1),
               concat('app-', toString(app_idx))) AS nsapp,
            intDiv(h, 13) % 100 AS roll,
            multiIf(roll < 80, 'success', roll < 92, 'failed', roll < 96, 'aborted', roll < 98, 'unknown', 'none') AS outcome,
            multiIf(outcome = 'aborted', toUInt8(130), outcome = 'unknown', toUInt8(124),
                    toUInt8(arrayElement([1, 6, 7, 28, 100, 127, 203, 214], (intDiv(h, 17) % 8) + 1))) AS code,
            multiIf(outcome = 'aborted', 'user_aborted', outcome = 'unknown', 'timeout',
                    arrayElement(['unknown', 'network', 'network', 'timeout', 'apt', 'command_not_found', 'config', 'storage'],
                                 (intDiv(h, 17) % 8) + 1)) AS category
        FROM numbers({EVENTS})
    )
)
