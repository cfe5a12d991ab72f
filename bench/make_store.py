"""Build a data dir holding N traces of realistic shapes, fast: rows go straight into SQLite (or, with
`--database-url` and `--admin-url`, into PostgreSQL by COPY).

    .venv/bin/python bench/make_store.py DATA_DIR --traces 1000000 [--events 10] [--seed 7]
    .venv/bin/python bench/make_store.py DATA_DIR --traces 1000000 --database-url postgresql://app@…/db \
        --admin-url postgresql://owner@…/db

The schema is made by opening the store the way the server does (every component's migrations), then
the rows are written in large transactions on one connection: 1,000,000 traces (10 events each) take a
few minutes on 2 cores, where `add_trace` one by one takes 16+. The mix follows bench_foundation.py:
60% passed, 30% failed, 5% error, a few aborted/running/queued; sources pr/schedule/manual/shadow_diff;
40 scenarios; 5 failure signatures; 3–6 steps, each opened and closed, with a navigation, network calls,
a console line, and for failures a failed assertion and an error; created over the last 30 days, in
insertion order with a little jitter (a few per cent come from the past, as re-ingested bundles do).
Every trace is indexed for search exactly as the store indexes it (`fts_body_from_rows`, then its facets).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from molar_mcp.compose import open_embedded
from molar_mcp.store.db import DB_FILE
from molar_mcp.store.search import INSERT_TEXT_SQL, STATUS_PARTITIONS, remember_words, status_table
from molar_mcp.store.sqlite import fts_body_from_rows, scenario_id_for

ORG = "org_local"
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_SHORT_SPACE = 62**9
_SHORT_MUL = 1_000_000_007  # coprime with 62**9: pk → short id is one to one

AREAS = ["billing", "checkout", "cart", "login", "signup", "search", "profile", "orders", "invoices", "admin"]
ACTIONS = ["upgrade", "refund", "coupon", "webhook", "export", "reset", "invite", "filter", "pay", "cancel"]
SCENARIOS = [f"{AREAS[i % 10]}-{ACTIONS[(i * 7) % 10]}-{i}" for i in range(40)]
SIGNATURES = [
    "assertion:final_url:/billing?upgraded=true",
    "error:TimeoutError:waiting for selector #pay-button",
    "assertion:status:webhook-404",
    "error:TypeError:cannot read properties of undefined (reading 'total')",
    "assertion:text:Order confirmed",
]
STATUSES = ["passed"] * 60 + ["failed"] * 30 + ["error"] * 5 + ["aborted"] * 2 + ["running"] * 2 + ["queued"]
SOURCES = ["pr", "pr", "schedule", "manual", "shadow_diff"]
DAY_MS = 86_400_000


def short_id(pk: int) -> str:
    n = (pk * _SHORT_MUL) % _SHORT_SPACE
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(out)


def make_trace(rng: random.Random, pk: int, created_ms: int, events_target: int) -> dict[str, Any]:
    status = rng.choice(STATUSES)
    scenario = SCENARIOS[rng.randrange(40)]
    area = scenario.split("-", 1)[0]
    failed = status in ("failed", "error")
    signature = SIGNATURES[rng.randrange(5)] if failed else None
    n_steps = rng.randint(3, 6)
    per_step = max(2, events_target // n_steps)
    events: list[tuple[Any, ...]] = []  # seq, ts, kind, step_id, step, ok, message, payload
    steps: list[tuple[Any, ...]] = []
    seq = 0
    ts = created_ms
    fail_step = rng.randint(2, n_steps) if failed else 0
    for step in range(1, n_steps + 1):
        step_id = f"s{step}"
        title = f"{ACTIONS[(step + pk) % 10]} on /{area}"
        first, first_ts = seq, ts
        step_ok = 0 if step == fail_step else 1
        events.append((seq, ts, "step.start", step_id, step, None, title, json.dumps({"title": title})))
        seq += 1
        for i in range(per_step - 2):
            ts += rng.randint(1, 400)
            r = i % 4
            if r == 0:
                url = f"https://shop.test/{area}?step={step}"
                events.append((seq, ts, "navigation", step_id, step, None, None, json.dumps({"url": url})))
            elif r == 1:
                code = 404 if step == fail_step and rng.random() < 0.5 else 200
                url = f"/api/{area}/{ACTIONS[i % 10]}"
                payload = json.dumps({"method": "POST", "url": url, "status": code, "duration_ms": rng.randint(3, 900)})
                events.append((seq, ts, "network.response", step_id, step, int(code < 400), None, payload))
            elif r == 2:
                events.append((seq, ts, "console", step_id, step, None, f"[{area}] rendered {ACTIONS[i % 10]}", "{}"))
            else:
                events.append(
                    (seq, ts, "dom.snapshot", step_id, step, None, None, json.dumps({"nodes": rng.randint(50, 900)}))
                )
            seq += 1
        if step == fail_step:
            assert signature is not None
            events.append(
                (seq, ts, "assertion", step_id, step, 0, f"expected {signature.split(':', 2)[2]} at /{area}", "{}")
            )
            seq += 1
            if status == "error":
                events.append((seq, ts, "error", step_id, step, 0, signature.split(":", 2)[2], "{}"))
                seq += 1
        events.append((seq, ts, "step.end", step_id, step, step_ok, None, "{}"))
        steps.append((step_id, step - 1, step, str(step), title, step_ok, first, seq, seq - first + 1, first_ts, ts))
        seq += 1
        if step == fail_step:
            break
    kinds: dict[str, int] = {}
    for ev in events:
        kinds[ev[2]] = kinds.get(ev[2], 0) + 1
    code_sha = f"{rng.getrandbits(160):040x}"
    title = scenario.replace("-", " ").capitalize()
    body = fts_body_from_rows(
        [scenario, title, signature or "", status, code_sha], [(e[2], e[5], e[6]) for e in events]
    )
    return {
        "row": (
            pk,
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            short_id(pk),
            ORG,
            scenario_id_for(scenario),
            scenario,
            title,
            status,
            rng.choice(SOURCES),
            events[-1][1] - created_ms,
            code_sha,
            rng.randint(1, 9000) if rng.random() < 0.4 else None,
            signature,
            created_ms,
            len(events),
            json.dumps(dict(sorted(kinds.items()))),
        ),
        "events": events,
        "steps": steps,
        "body": body,
    }


def build(data_dir: Path, n: int, events: int, seed: int, chunk: int = 20_000) -> None:
    with open_embedded(data_dir):
        pass  # every component's schema, as the server makes it
    conn = sqlite3.connect(data_dir / DB_FILE, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -400000")
    (start_pk,) = conn.execute("SELECT coalesce(max(pk), 0) FROM traces").fetchone()
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    span = 30 * DAY_MS
    t0 = time.perf_counter()
    done = 0
    while done < n:
        batch = [
            make_trace(rng, start_pk + done + i + 1, _created(rng, now, span, done + i, n), events)
            for i in range(min(chunk, n - done))
        ]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO traces (pk, id, short_id, org_id, scenario_id, scenario_slug, scenario_title, status,"
            " source, duration_ms, code_sha, pr_number, failure_signature, created_ms, event_count, kind_counts)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [t["row"] for t in batch],
        )
        conn.executemany(
            "INSERT INTO events (trace_pk, seq, ts, kind, step_id, step, ok, message, payload)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            [(t["row"][0], *e) for t in batch for e in t["events"]],
        )
        conn.executemany(
            "INSERT INTO steps (trace_pk, step_id, ord, step, path, title, ok, first_seq, last_seq, event_count,"
            " start_ts, end_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(t["row"][0], *s) for t in batch for s in t["steps"]],
        )
        conn.executemany(INSERT_TEXT_SQL, [(t["row"][0], t["body"], t["row"][0]) for t in batch])  # with facets
        for status in STATUS_PARTITIONS:  # and in its status's table (what `index_text` does)
            conn.executemany(
                f"INSERT INTO {status_table(status)} (rowid, body) SELECT rowid, body FROM traces_fts WHERE rowid = ?",
                [(t["row"][0],) for t in batch if t["row"][7] == status],
            )
        remember_words(conn, [t["body"] for t in batch])  # what the store does for each indexed text
        conn.execute("COMMIT")
        done += len(batch)
        rate = done / (time.perf_counter() - t0)
        print(f"\r{done:,}/{n:,} traces, {rate:,.0f}/s", end="", file=sys.stderr, flush=True)
    conn.execute("PRAGMA optimize")
    conn.execute("INSERT INTO traces_fts (traces_fts) VALUES ('optimize')")
    for status in STATUS_PARTITIONS:
        table = status_table(status)
        conn.execute(f"INSERT INTO {table} ({table}) VALUES ('optimize')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"\n{n:,} traces in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


_PG_FILLED = ("traces", "events", "steps", "traces_fts")


def build_pg(data_dir: Path, database_url: str, admin_url: str, n: int, events: int, seed: int) -> None:
    """The same rows into PostgreSQL, the way a bulk load is done: the schema made by the server's own
    migrations (as the app role); then, as a role that row-level security does not apply to (the tables'
    owner on a managed database, a superuser here: COPY FROM is refused on a table with row-level
    security), the secondary indexes of the filled tables dropped, the rows written with COPY in chunks of
    50,000 traces with foreign-key triggers off (`session_replication_role = replica`: every row is
    generated with its trace), the indexes built again in one pass each, the identity sequence moved past
    the rows, and the tables vacuumed and analysed (visibility map for index-only scans, statistics). The
    rows are the very rows `build` writes into SQLite (same generator, same seed)."""
    import psycopg

    with open_embedded(data_dir, database_url=database_url):
        pass
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    span = 30 * DAY_MS
    t0 = time.perf_counter()
    done = 0
    chunk = 50_000
    with psycopg.connect(admin_url, autocommit=True) as conn:
        (start_pk,) = conn.execute("SELECT coalesce(max(pk), 0) FROM traces").fetchone() or (0,)
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '512MB'")
        # Secondary indexes (not those behind a primary key or unique constraint), rebuilt after the load.
        indexes = conn.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indrelid"
            " WHERE c.relname = ANY(%s) AND c.relnamespace = current_schema()::regnamespace"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
            (list(_PG_FILLED),),
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        while done < n:
            batch = [
                make_trace(rng, start_pk + done + i + 1, _created(rng, now, span, done + i, n), events)
                for i in range(min(chunk, n - done))
            ]
            with conn.transaction(), conn.cursor() as cur:
                _copy(
                    cur,
                    "traces (pk, id, short_id, org_id, scenario_id, scenario_slug, scenario_title, status, source,"
                    " duration_ms, code_sha, pr_number, failure_signature, created_ms, event_count, kind_counts)",
                    (t["row"] for t in batch),
                )
                _copy(
                    cur,
                    "events (trace_pk, org_id, seq, ts, kind, step_id, step, ok, message, payload)",
                    ((t["row"][0], ORG, *e) for t in batch for e in t["events"]),
                )
                _copy(
                    cur,
                    "steps (trace_pk, step_id, ord, step, path, title, ok, first_seq, last_seq, event_count,"
                    " start_ts, end_ts)",
                    ((t["row"][0], *st) for t in batch for st in t["steps"]),
                )
                # (The trigger that sets a text's status is off with the others: the status is written here.)
                _copy(cur, "traces_fts (rowid, body, status)", ((t["row"][0], t["body"], t["row"][7]) for t in batch))
            done += len(batch)
            rate = done / (time.perf_counter() - t0)
            print(f"\r{done:,}/{n:,} traces, {rate:,.0f}/s", end="", file=sys.stderr, flush=True)
        print(f"\nrows in {time.perf_counter() - t0:.0f} s; indexes", file=sys.stderr, flush=True)
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("SELECT setval(pg_get_serial_sequence('traces', 'pk'), (SELECT max(pk) FROM traces))")
        for table in _PG_FILLED:
            conn.execute(f"VACUUM (ANALYZE) {table}")
    print(f"{n:,} traces in {time.perf_counter() - t0:.0f} s (PostgreSQL)", file=sys.stderr)


def _copy(cur: Any, target: str, rows: Any) -> None:
    with cur.copy(f"COPY {target} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _created(rng: random.Random, now: int, span: int, i: int, n: int) -> int:
    base = now - span + span * i // max(1, n)
    if rng.random() < 0.03:
        return base - rng.randint(0, 3 * DAY_MS)  # re-ingested from the past
    return base + rng.randint(0, 2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10, help="about this many events per trace")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", help="PostgreSQL as the server connects (its migrations run as this role)")
    parser.add_argument("--admin-url", help="PostgreSQL as the tables' owner or a superuser (for COPY)")
    args = parser.parse_args()
    if args.database_url:
        build_pg(
            args.data_dir, args.database_url, args.admin_url or args.database_url, args.traces, args.events, args.seed
        )
    else:
        build(args.data_dir, args.traces, args.events, args.seed)


if __name__ == "__main__":
    main()
