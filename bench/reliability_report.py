"""Run the fault-injection tests and write what they observed into RELIABILITY.md.

    nice .venv/bin/python -m bench.reliability_report [--runs N] [--from-json FILE]

Runs ``tests/reliability/test_faults.py`` (real worker processes, PostgreSQL and Redis on
127.0.0.1, a redis-server of its own) ``--runs`` times with ``$CLIPSEARCH_RELIABILITY_OUT``
pointing at a JSON-lines file: each fault test appends one row of what it saw (images lost,
answers served during the fault, recovery times). The rows go to
``bench/results/reliability.json``; the table between ``<!-- faults:begin -->`` and
``<!-- faults:end -->`` in RELIABILITY.md is rewritten from them (several runs: ranges). The
rest of RELIABILITY.md (the hostile-input section) is left as it is. ``--from-json`` re-renders
the table from a saved file without running anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "RELIABILITY.md"
RESULTS = REPO / "bench" / "results" / "reliability.json"
TESTS = "tests/reliability/test_faults.py"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"


def run_tests(runs: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    walls: list[float] = []
    loads: list[float] = []
    outcomes: list[str] = []
    for i in range(runs):
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as fh:
            out = fh.name
        env = {**os.environ, "CLIPSEARCH_RELIABILITY_OUT": out}
        load = os.getloadavg()[0]
        loads.append(round(load, 1))
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", TESTS, "-q", "-p", "no:cacheprovider"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        walls.append(time.monotonic() - t0)
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        outcomes.append(summary)
        print(f"run {i + 1}: {summary} (load average {load:.1f} at start)", file=sys.stderr)
        if proc.returncode != 0:
            print(proc.stdout[-6000:], file=sys.stderr)
        for line in Path(out).read_text().splitlines():
            if line.strip():
                rows.append({**json.loads(line), "run": i + 1})
        os.unlink(out)
    return {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work)",
        "runs": runs,
        "pytest": outcomes,
        "wall_s": [round(w, 1) for w in walls],
        "load_at_start": loads,
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------
# Rendering


def span(values: list[Any], unit: str = "") -> str:
    """``3.1 s`` for one value, ``3.1 to 4.0 s`` for several."""
    nums = [v for v in values if v is not None]
    if not nums:
        return "n/a"
    lo, hi = min(nums), max(nums)
    return f"{lo}{unit}" if lo == hi else f"{lo} to {hi}{unit}"


def statuses(dicts: list[dict[str, int]]) -> str:
    total: dict[str, int] = defaultdict(int)
    for d in dicts:
        for k, v in d.items():
            total[k] += v
    return ", ".join(f"{v} x {k}" for k, v in sorted(total.items()))


def _kill(rs: list[dict[str, Any]]) -> tuple[str, str, str]:
    return (
        f"{statuses([r['search_requests_during_fault'] for r in rs])} to `GET /api/search` "
        "while the worker was dead and the new one started: no error",
        f"job done {span([r['kill_to_job_done_s'] for r in rs], ' s')} after the kill, of which "
        f"{span([r['new_worker_ready_s'] for r in rs], ' s')} starting the new worker "
        "(its start-up recovery re-enqueues the job)",
        f"killed at {span([r['done_at_kill'] for r in rs])} of {rs[0]['images']} done; "
        f"then {span([r['searchable'] for r in rs])} searchable, "
        f"{span([r['embeddings'] for r in rs])} embeddings, duplicates in search "
        f"{span([r['duplicates_in_search'] for r in rs])}",
    )


def _redis(rs: list[dict[str, Any]]) -> tuple[str, str, str]:
    volatile = rs[0].get("stale_after_s") is not None
    extra = ""
    if volatile:
        extra = (
            "; an ingest posted while Redis was down got 202 (the job is recorded) and ended "
            + "/".join(sorted({str(r["ingest_submitted_while_down"]) for r in rs}))
        )
    how = (
        f"the same worker, no restart: idle for `stale_after_s` = {rs[0]['stale_after_s']} s, "
        "it re-enqueues the job from the catalog"
        if volatile
        else "the same worker, no restart: it reconnects and consumes the surviving queue"
    )
    return (
        f"{statuses([r['search_requests_during_fault'] for r in rs])} to `GET /api/search`: "
        f"search does not need the broker{extra}",
        f"job done {span([r['restart_to_job_done_s'] for r in rs], ' s')} after Redis was "
        f"back ({how})",
        f"killed at {span([r['done_at_kill'] for r in rs])} done, Redis down "
        f"{span([r['redis_down_s'] for r in rs], ' s')}; then {span([r['searchable'] for r in rs])} "
        f"of {rs[0]['images']} searchable, {span([r['embeddings'] for r in rs])} embeddings",
    )


def _db(rs: list[dict[str, Any]]) -> tuple[str, str, str]:
    after = rs[0]["after_terminate"]
    during = rs[0]["during_outage"]
    return (
        "after `pg_terminate_backend`: "
        + ", ".join(f"{k} {v}" for k, v in after.items())
        + "; database unreachable: "
        + ", ".join(f"{k} {v}" for k, v in during.items())
        + f" (each within {span([r['slowest_503_s'] for r in rs], ' s')}), health probes "
        + statuses([r["health_probes_during_outage"] for r in rs])
        + f"; the message: `{rs[0]['detail_example']}`",
        f"first 200 {span([r['recovery_after_db_back_s'] for r in rs], ' s')} after the "
        "database was reachable again, no restart",
        f"server connections terminated: {span([r['backends_terminated'] for r in rs])}; outage "
        f"{span([r['outage_s'] for r in rs], ' s')}",
    )


def _serve(rs: list[dict[str, Any]]) -> tuple[str, str, str]:
    return (
        f"searches before the kill: {span([r['searches_before_kill'] for r in rs])} of "
        f"{rs[0]['images']} images; connection refused while the process was down "
        f"({span([r['api_down_s'] for r in rs], ' s')}: the time `clipsearch serve` takes to "
        f"start); right after the restart: {span([r['searches_right_after_restart'] for r in rs])}",
        f"re-index done {span([r['kill_to_reindex_done_s'] for r in rs], ' s')} after the kill "
        "(the new embedded worker resumes it from the catalog); index version "
        f"{span([r['index_version'] for r in rs])} active, an uploaded image finds itself first "
        + "/".join(sorted({r["self_match_by_upload"] for r in rs})),
        f"killed at {span([r['reindex_done_at_kill'] for r in rs])} of {rs[0]['images']} "
        f"re-embedded; {span([r['embeddings'] for r in rs])} embeddings (both models), old "
        f"processes left {span([r['old_workers_left'] for r in rs])}",
    )


def _disk(rs: list[dict[str, Any]]) -> tuple[str, str, str]:
    job = rs[0]["job"]
    again = rs[0]["reingest_after_space_freed"]
    return (
        f"job `{job['state']}`: {job['done']} done, {job['failed']} failed with "
        f"`{rs[0]['reason']}` (in the job's errors and `GET /api/images/{{id}}`); their "
        f"thumbnails 404, every other image ready with its thumbnail; "
        f"{span([r['partial_files_left'] for r in rs])} partial files left",
        f"after freeing space, ingesting the folder again: job `{again['state']}`, "
        f"{again['done']} done, {again['failed']} failed; "
        f"{span([r['searchable_after_reingest'] for r in rs])} of {rs[0]['images']} searchable",
        f"{span([r['searchable_after_fault'] for r in rs])} searchable right after the fault",
    )


def _twice(rs: list[dict[str, Any]]) -> tuple[str, str, str]:
    jobs = [" + ".join(f"{j['done']}/{j['total']}" for j in r["jobs"]) + " done" for r in rs]
    return (
        "both `POST /api/ingest` answered 202 with their own job",
        "both jobs `done` (the one whose images the other processed finishes with what it did "
        "itself): " + "; ".join(jobs),
        f"{span([r['image_rows'] for r in rs])} image rows, {span([r['embeddings'] for r in rs])} "
        f"embeddings, {span([r['searchable'] for r in rs])} searchable, duplicates in search "
        f"{span([r['duplicates_in_search'] for r in rs])}",
    )


FAULTS: list[tuple[str, str, str, Callable[[list[dict[str, Any]]], tuple[str, str, str]]]] = [
    (
        "worker SIGKILL mid-job",
        "Worker killed with SIGKILL mid-ingest",
        "`POST /api/ingest` (80 images, SQLite + embedded broker); `kill -9` of the worker process "
        "once a quarter is done; a new worker started",
        _kill,
    ),
    (
        "Redis restarted mid-job (AOF persistence)",
        "Redis restarted mid-ingest (append-only file, as docker-compose.yml runs it)",
        "our own redis-server on a free port; SIGKILL once a quarter is done, started again on the "
        "same port; PostgreSQL catalog",
        _redis,
    ),
    (
        "Redis restarted mid-job (no persistence)",
        "Redis restarted mid-ingest, losing its queue",
        'as above with `--appendonly no --save ""`: every queued and unacknowledged message is '
        "gone",
        _redis,
    ),
    (
        "database connections terminated, then database unreachable",
        "PostgreSQL connections dropped, then the database unreachable",
        "`pg_terminate_backend` of every connection of the API; then the TCP proxy between API and "
        "PostgreSQL stops listening and drops its connections",
        _db,
    ),
    (
        "clipsearch serve and its embedded worker SIGKILLed during a re-index",
        "`clipsearch serve` killed during a re-index",
        "`POST /api/reindex` to a new model (60 images); SIGKILL to the process group of "
        "`clipsearch serve` (API and its embedded worker) once a quarter is re-embedded; "
        "`clipsearch serve` started again",
        _serve,
    ),
    (
        "disk full writing thumbnails",
        "Disk full while writing thumbnails",
        "`write()` of 4 of 40 thumbnails raises `OSError(ENOSPC)` (the decoder's `os` replaced "
        "in process)",
        _disk,
    ),
    (
        "same folder ingested twice at once",
        "The same folder ingested twice at once",
        "two concurrent `POST /api/ingest` of one folder (80 images); PostgreSQL, Redis, a worker "
        "running two tasks at a time",
        _twice,
    ),
]


def lost(rs: list[dict[str, Any]]) -> str:
    return span([r.get("lost") for r in rs])


def render(data: dict[str, Any]) -> str:
    by_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in data["rows"]:
        by_fault[row["fault"]].append(row)
    lines = [
        BEGIN,
        "",
        f"Measured by `bench/reliability_report.py` on {data['date']}: "
        f"`{TESTS}` {data['runs']} time(s) on {data['machine']}; pytest said "
        + "; ".join(f"`{o}`" for o in data["pytest"])
        + f" (wall {span(data['wall_s'], ' s')}, load average "
        + f"{span(data.get('load_at_start') or [], '')} at the start). Times include process "
        "start-ups on a shared machine: they show the order of magnitude, not a guarantee.",
        "",
        "| fault | how it is injected | images lost | what users got during the fault | "
        "recovery | also seen |",
        "|---|---|---|---|---|---|",
    ]
    for key, title, how, fmt in FAULTS:
        rs = by_fault.get(key)
        if not rs:
            lines.append(f"| {title} | {how} | not run | | | |")
            continue
        during, recovery, seen = fmt(rs)
        lines.append(f"| {title} | {how} | **{lost(rs)}** | {during} | {recovery} | {seen} |")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(table: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Reliability\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: table, text, flags=re.S)
    else:
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} block to fill")
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--from-json", type=Path, help="render a saved results file only")
    args = parser.parse_args()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        data = run_tests(args.runs)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    write_doc(render(data))
    print(f"wrote {DOC.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
