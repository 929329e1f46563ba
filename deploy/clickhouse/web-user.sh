#!/bin/bash
# The web's ClickHouse user: read only. The clickhouse-server image runs this once, when its data volume
# is new (/docker-entrypoint-initdb.d, deploy/compose.yaml); on an existing server run the two statements
# yourself. `readonly = 2` refuses INSERT, ALTER, DROP, CREATE and TRUNCATE and still lets a query set
# its own settings (the web sets enable_optimize_predicate_expression); SELECT is its only grant.
set -euo pipefail
: "${CLICKHOUSE_WEB_PASSWORD:?set CLICKHOUSE_WEB_PASSWORD}"
clickhouse client --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" --multiquery <<SQL
CREATE USER IF NOT EXISTS web IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_WEB_PASSWORD//\'/\\\'}' SETTINGS readonly = 2;
GRANT SELECT ON telemetry.* TO web;
SQL
