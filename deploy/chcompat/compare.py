#!/usr/bin/env python3
"""Same SQL, same answers on ClickHouse 18.16 and on a current ClickHouse (chDB, the engine in-process).

Reads back from a running ClickHouse 18.16 (its `system.query_log` on) what the services ran: every
statement that changes the schema or moves data by itself (CREATE, ALTER, DROP, RENAME, OPTIMIZE,
INSERT ... SELECT), in the order it ran, and every SELECT of the read-only user (the web, and the
analysts' queries run as it). It replays the statements into a fresh chDB session; where a table got
rows inserted directly (`INSERT ... FORMAT RowBinary` of the writer), it loads that table's rows as
18.16 holds them at the point of the first such insert. Then it runs each SELECT on both engines and
compares the answers: JSONCompact rows, numbers equal to 1e-9 relative, rows sorted first only where
the statement has no ORDER BY of its own. It prints how many statements were replayed and queries
compared, and every difference; it exits 1 on any difference or error, or when nothing was compared.

`--plant` alters one stored event on the chDB side only (a success turned into a failure), to show
the check failing: it must then report differences and exit 1.

No list of migrations or queries is kept here: whatever the writer and the web ran is what is checked,
except a read of the settle watermark alone, which is a clock (`SETTLE_CLOCK`).
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import urllib.parse
import urllib.request

FORMAT_TAIL = re.compile(r"\s+FORMAT\s+\w+\s*;?\s*$", re.IGNORECASE | re.DOTALL)
DIRECT_INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+([`\w.]+)\s*(\([^)]*\))?\s*(FORMAT\s+\w+|VALUES)", re.IGNORECASE | re.DOTALL
)
# Settings of the reader's session that do not shape an answer (the web's own ones are replayed).
SESSION_SETTINGS = {"log_queries", "readonly", "max_execution_time", "max_result_rows", "max_result_bytes"}
MV_TARGET = re.compile(r"\bTO\s+([`\w]+\.[`\w]+)", re.IGNORECASE)
MV_SOURCE = re.compile(r"\bFROM\s+([`\w]+\.[`\w]+)", re.IGNORECASE)
REPLAYED = re.compile(r"^\s*(CREATE|ALTER|DROP|RENAME|OPTIMIZE|TRUNCATE|INSERT)\b", re.IGNORECASE)
# A read of the settle watermark alone (the web's check that no settle recorded one while it computed a
# view): its answer is ClickHouse's clock when the first settle's watermark was picked (`now()`), which
# a replay records anew, so it is not compared. Every view that depends on the watermark is.
SETTLE_CLOCK = re.compile(
    r"^\s*SELECT\s+toUInt32\(max\(watermark\)\)\s+FROM\s+[`\w]+\.settle_watermark\s*$", re.IGNORECASE
)


class Server:
    """ClickHouse 18.16 over HTTP; our own statements stay out of its query log."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def run(self, sql, **settings):
        params = {"log_queries": "0", **{k: str(v) for k, v in settings.items()}}
        request = urllib.request.Request(
            f"{self.url}/?{urllib.parse.urlencode(params)}", data=sql.encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode().strip()) from None


def strip_format(sql):
    return FORMAT_TAIL.sub("", sql.strip().rstrip(";"))


def top_level_order_by(sql):
    """True when ORDER BY appears outside every parenthesis and string literal."""
    depth, i, text = 0, 0, sql
    plain = []
    while i < len(text):
        c = text[i]
        if c in "'`\"":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            plain.append(" ")
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        plain.append(c if depth == 0 else " ")
        i += 1
    return re.search(r"\bORDER\s+BY\b", "".join(plain), re.IGNORECASE) is not None


def as_int(v):
    """An integer, also one quoted as JSON text (18.16 quotes 64-bit integers), else None."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
        return int(v)
    return None


def same_value(a, b):
    if a == b:
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)) or a is None or b is None:
        return False
    ia, ib = as_int(a), as_int(b)
    if ia is not None and ib is not None:
        return ia == ib
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return False
    if math.isnan(fa) and math.isnan(fb):
        return True
    return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)


def same_rows(a, b):
    return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))


def sort_key(row):
    return json.dumps(row, sort_keys=True, default=str)


def query_log(server):
    """Finished statements in the order they ran (one flush per 100 ms, read part by part)."""
    server.run("SYSTEM FLUSH LOGS")
    text = server.run(
        "SELECT event_time, user, query, Settings.Names AS names, Settings.Values AS vals "
        "FROM system.query_log WHERE type = 2 FORMAT JSONEachRow",
        max_threads=1,
    )
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    rows.sort(key=lambda r: r["event_time"])  # stable: keeps the log's order within a second
    return rows


def table_dump(server, table):
    """(columns, TabSeparated rows) of a table as 18.16 holds it."""
    database, name = table.replace("`", "").split(".", 1)
    columns = server.run(
        "SELECT name FROM system.columns WHERE database = '{}' AND table = '{}' "
        "AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') FORMAT TabSeparated".format(database, name)
    ).split()
    body = server.run(
        "SELECT {} FROM {}.{} FORMAT TabSeparated".format(", ".join(f"`{c}`" for c in columns), database, name)
    )
    return columns, body


def fed_by(chdb, table):
    """The tables the materialized views of chDB fill from `table` (`db.name`, no backticks)."""
    database, name = table.replace("`", "").split(".", 1)
    text = chdb.query(
        "SELECT create_table_query FROM system.tables WHERE database = '{}' "
        "AND engine = 'MaterializedView'".format(database),
        "TabSeparated",
    ).bytes().decode()
    out = []
    for query in text.splitlines():
        target = MV_TARGET.search(query)
        source = MV_SOURCE.search(query)
        if target and source and source.group(1).replace("`", "") == f"{database}.{name}":
            out.append(target.group(1).replace("`", ""))
    return out


def plant(columns, body):
    """One stored success turned into a failure (every stored copy of that event)."""
    status, event = columns.index("status"), columns.index("event_id")
    rows = [line.split("\t") for line in body.splitlines()]
    chosen = next((r[event] for r in rows if r[status] == "success"), None)
    if chosen is None:
        return body, False
    for r in rows:
        if r[event] == chosen:
            r[status] = "failed"
    return "".join("\t".join(r) + "\n" for r in rows), True


def self_test():
    """Table-driven checks of the comparison's own rules; returns the failures."""
    failures = []

    def check(name, got, want):
        if got != want:
            failures.append(f"{name}: got {got!r}, want {want!r}")

    for a, b, want in [
        ("1", 1, True),  # a quoted 64-bit integer against a plain one
        ("18446744073709551615", 18446744073709551614, False),  # beyond a float's precision
        (0.1 + 0.2, 0.3, True),
        (1.0, 1.0000001, False),
        ("1.5", 1.5, True),
        ("x", "x", True),
        ("x", "y", False),
        (None, 0, False),
        (None, None, True),
        ([1, "2"], ["1", 2], True),
        ([1], [1, 1], False),
        ("nan", "nan", True),
    ]:
        check(f"same_value({a!r}, {b!r})", same_value(a, b), want)
    for sql, want in [
        ("SELECT a FROM t ORDER BY a", True),
        ("SELECT a FROM (SELECT a FROM t ORDER BY a)", False),
        ("SELECT a FROM t WHERE x = 'ORDER BY' GROUP BY a", False),
        ("SELECT a FROM t WHERE x = 'it''s (' order  by a", True),
        ("SELECT a FROM t WHERE x = 'a\\' ORDER BY' LIMIT 1", False),
    ]:
        check(f"top_level_order_by({sql!r})", top_level_order_by(sql), want)
    for sql, want in [
        ("SELECT 1 FORMAT RowBinary", "SELECT 1"),
        ("SELECT 1\nFORMAT TabSeparated;", "SELECT 1"),
        ("SELECT 'FORMAT x' AS f", "SELECT 'FORMAT x' AS f"),
    ]:
        check(f"strip_format({sql!r})", strip_format(sql), want)
    for sql, want in [
        ("INSERT INTO `db`.events (a, b) FORMAT RowBinary", "`db`.events"),
        ("INSERT INTO db.schema_migrations (version, name) VALUES (1, 'x')", "db.schema_migrations"),
        ("INSERT INTO db.installs SELECT * FROM db.events", None),
    ]:
        m = DIRECT_INSERT.match(sql)
        check(f"DIRECT_INSERT({sql!r})", m.group(1) if m else None, want)
    for sql, want in [
        ("SELECT toUInt32(max(watermark)) FROM `telemetry`.settle_watermark", True),
        ("SELECT count() FROM `telemetry`.installs_final WHERE started_at > (SELECT max(watermark) FROM `telemetry`.settle_watermark)", False),
        ("SELECT toUInt32(max(watermark)) FROM `telemetry`.settle_watermark WHERE installs > 0", False),
    ]:
        check(f"SETTLE_CLOCK({sql!r})", bool(SETTLE_CLOCK.match(sql)), want)
    columns = ["event_id", "status"]
    body = "1\tinstalling\n2\tsuccess\n3\tsuccess\n2\tsuccess\n"
    check("plant", plant(columns, body), ("1\tinstalling\n2\tfailed\n3\tsuccess\n2\tfailed\n", True))
    check("plant without a success", plant(columns, "1\tfailed\n"), ("1\tfailed\n", False))
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-test", action="store_true", help="check the comparison's own rules and exit")
    parser.add_argument("--clickhouse", help="HTTP URL of the ClickHouse 18.16 server")
    parser.add_argument("--reader", default="web", help="the user whose SELECTs are compared")
    parser.add_argument("--plant", action="store_true", help="alter one event on the chDB side only")
    args = parser.parse_args()
    if args.self_test:
        failures = self_test()
        print("\n".join(failures) or "self-test passed")
        return 1 if failures else 0
    if not args.clickhouse:
        parser.error("--clickhouse is required")

    server = Server(args.clickhouse)
    # Both engines in the server's time zone, so DateTime text means the same instant on both sides.
    os.environ["TZ"] = server.run("SELECT timezone() FORMAT TabSeparated").strip()
    from chdb import session  # after TZ is set

    log = query_log(server)
    replay, queries, loaded = [], [], set()
    clock_reads = 0
    for row in log:
        sql = row["query"].strip()
        if row["user"] == args.reader:
            if SETTLE_CLOCK.match(strip_format(sql)):
                clock_reads += 1
            elif re.match(r"^\s*(SELECT|WITH)\b", sql, re.IGNORECASE):
                settings = {
                    k: v for k, v in zip(row["names"], row["vals"]) if k not in SESSION_SETTINGS
                }
                query = (strip_format(sql), tuple(sorted(settings.items())))
                if query not in queries:
                    queries.append(query)
            continue
        direct = DIRECT_INSERT.match(sql)
        if direct:
            table = direct.group(1)
            if table not in loaded:
                loaded.add(table)
                replay.append(("load", table))
        elif REPLAYED.match(sql):
            replay.append(("sql", strip_format(sql)))

    failures = []
    planted = False
    with tempfile.TemporaryDirectory(prefix="chcompat-") as path:
        chdb = session.Session(path)
        statements = rows_loaded = 0
        for kind, what in replay:
            if kind == "sql":
                print("replay: " + " ".join(what.split())[:110], file=sys.stderr)
                try:
                    chdb.query(what)
                    statements += 1
                except Exception as e:  # chDB raises its own error type
                    failures.append(f"statement fails on chDB: {e}\n    {what}")
                continue
            columns, body = table_dump(server, what)
            if args.plant and what.replace("`", "").endswith(".events"):
                body, planted = plant(columns, body)
            if body:
                insert = "INSERT INTO {} ({}) FORMAT TabSeparated\n".format(
                    what, ", ".join(f"`{c}`" for c in columns)
                )
                try:
                    chdb.query(insert + body)
                except Exception as e:
                    failures.append(f"loading {what} into chDB fails: {e}")
            rows_loaded += body.count("\n")
            print(f"loaded {what}: {body.count(chr(10))} rows", file=sys.stderr)
            # A materialized view fed by this load (the touches of `events`) records chDB's clock, not
            # the one 18.16 recorded when the rows came: its table takes 18.16's rows, so that the
            # statements replayed next (the settles' windows) see the same touches on both sides.
            for target in fed_by(chdb, what):
                chdb.query(f"TRUNCATE TABLE {target}")
                columns, body = table_dump(server, target)
                if body:
                    chdb.query(
                        "INSERT INTO {} ({}) FORMAT TabSeparated\n".format(
                            target, ", ".join(f"`{c}`" for c in columns)
                        )
                        + body
                    )
                print(f"reloaded {target} as 18.16 holds it: {body.count(chr(10))} rows", file=sys.stderr)

        compared = 0
        settings_seen = sorted({name for _, settings in queries for name, _ in settings})
        # A setting a current release no longer has (18.16's allow_experimental_low_cardinality_type of
        # the test profile) is one whose feature is always on there: reported, not set.
        known = set(chdb.query("SELECT name FROM system.settings", "CSV").bytes().decode().replace('"', "").split())
        unknown = [name for name in settings_seen if name not in known]
        for sql, settings in queries:
            try:
                old = json.loads(server.run(sql + "\nFORMAT JSONCompact", **dict(settings)))["data"]
            except RuntimeError as e:
                failures.append(f"query fails on 18.16: {e}\n    {sql}")
                continue
            try:
                for name, value in settings:
                    if name in known:
                        chdb.query(f"SET {name} = {value}")
                new = json.loads(chdb.query(sql + "\nFORMAT JSONCompact", "JSONCompact").bytes())["data"]
            except Exception as e:
                failures.append(f"query fails on chDB: {e}\n    {sql}")
                continue
            compared += 1
            if not top_level_order_by(sql):
                old, new = sorted(old, key=sort_key), sorted(new, key=sort_key)
            if not same_rows(old, new):
                failures.append(
                    "answers differ:\n    {}\n    18.16: {}\n    chDB:  {}".format(
                        sql, json.dumps(old)[:2000], json.dumps(new)[:2000]
                    )
                )
        chdb.close()

    print(
        f"replayed {statements} statements and {rows_loaded} rows of {len(loaded)} tables; "
        f"compared {compared} of {len(queries)} distinct queries (settings: {settings_seen or 'none'}"
        f"{f', unknown to chDB so not set: {unknown}' if unknown else ''}); "
        f"{len(failures)} differences"
        + (" (one event planted)" if planted else "")
        + (f"; not compared: {clock_reads} reads of the settle watermark alone (a clock)" if clock_reads else "")
    )
    for f in failures:
        print(f)
    if args.plant and not planted:
        print("no success event to plant a difference in")
        return 1
    if compared == 0:
        print("nothing compared")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
