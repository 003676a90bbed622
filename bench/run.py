"""Benchmarks for issue 2, measured against baselines in the same run.

    python bench/run.py [--events 1000000] [--big-gb 2] [--skip-10m] [--skip-memory]

Writes a dated section to docs/benchmarks.md (and prints it). Nothing here is asserted:
benchmarks report, tests decide.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from kubetrail import Archive, EventFilter, query_events  # noqa: E402
from kubetrail.simulate import write_simulation  # noqa: E402


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def sim_file(events: int, seed: int = 11) -> Path:
    path = OUT / f"sim-{events}.log"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        write_simulation(path, events=events, seed=seed, scenarios=("exec-shell", "brute-force"))
    return path


def duckdb_baseline(path: Path, work: Path) -> float:
    con = duckdb.connect()
    target = work / "duckdb.parquet"
    seconds, _ = timed(con.execute, f"COPY (SELECT * FROM read_json('{path}', "
                       "format='newline_delimited', union_by_name=true)) "
                       f"TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    return seconds


def jq_baseline(path: Path) -> float | None:
    if not shutil.which("jq"):
        return None
    started = time.perf_counter()
    with open(path, "rb") as src:
        subprocess.run(["jq", "-c", 'select(.verb == "delete") | {user: .user.username, '
                        'resource: .objectRef.resource, name: .objectRef.name}'],
                       stdin=src, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def query_time(archive: Archive, runs: int = 5) -> float:
    con = archive.connect()
    flt = EventFilter(users=("*@*",), verbs=("delete", "create", "patch", "update"),
                      resources=("deployments.apps", "secrets", "pods/exec"))
    times = []
    for _ in range(runs):
        t, _ = timed(query_events, con, flt, limit=100)
        times.append(t)
    return statistics.median(times)


def scale_archive(archive: Archive, copies: int, work: Path) -> Archive:
    """An archive `copies` times bigger: the same segments under other cluster names."""
    big = Archive(work / "big-archive")
    files = [str(p) for p in archive.segment_files()]
    con = duckdb.connect()
    for i in range(copies):
        d = big.segments_dir / f"cluster=copy{i}" / "date=all"
        d.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY (SELECT * REPLACE ('copy{i}' AS cluster) FROM read_parquet($f)) "
                    f"TO '{d}/seg.parquet' (FORMAT parquet, COMPRESSION zstd)", {"f": files})
    return big


_PEAK_CHILD = """
import sys
from kubetrail.cli import main
rc = main(sys.argv[1:])
# VmHWM belongs to this process image alone; ru_maxrss would also count the pages the
# (large) benchmark process shared with this child between fork and exec.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(int(hwm.split()[1]), file=sys.stderr)
sys.exit(rc)
"""


def peak_memory(path: Path, work: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a CLI ingest of `path` in a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_CHILD, "--data-dir",
                           str(work / "mem-archive"), "--no-progress", "ingest", str(path)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=True)
    seconds = time.perf_counter() - started
    return int(done.stderr.strip().splitlines()[-1]) / 1024, seconds


def policy_simulate_times(path: Path, archive: Archive, work: Path) -> tuple[float, float]:
    """Seconds of `kubetrail policy simulate` (the recommended policy) over the log file and
    over the archive, each in a fresh process."""
    from kubetrail.policy.recommend import recommend_policy

    policy = work / "policy.yaml"
    policy.write_text(recommend_policy("baseline"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    runs = []
    for args in ([str(path)], ["--archive"]):
        seconds, _ = timed(subprocess.run, [sys.executable, "-m", "kubetrail", "--data-dir",
                                            str(archive.root), "policy", "simulate", str(policy),
                                            *args, "-o", "json"],
                           env=env, check=True, stdout=subprocess.DEVNULL)
        runs.append(seconds)
    return runs[0], runs[1]


def detect_times(path: Path, work: Path) -> tuple[float, float, int]:
    """Seconds of `kubetrail detect` (whole pack, JSON out) and of `kubetrail ingest --detect`
    into a fresh archive, each in a fresh process; and the number of rules."""
    from kubetrail.detect import load_rules

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t_detect, _ = timed(subprocess.run, [sys.executable, "-m", "kubetrail", "--data-dir",
                                          str(work / "detect-state"), "detect", str(path),
                                          "-o", "json", "--stateless"],
                        env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_ingest, _ = timed(subprocess.run, [sys.executable, "-m", "kubetrail", "--data-dir",
                                          str(work / "detect-archive"), "--no-progress", "ingest",
                                          "--detect", str(path), "--cluster", "bench"],
                        env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return t_detect, t_ingest, len(load_rules().enabled())


def redaction_and_verify(path: Path, archive: Archive, work: Path
                         ) -> tuple[float, tuple[float, float, int]]:
    """Seconds of ingest without redaction; (verify s, sha256sum s, bytes) of the archive."""
    config = work / "no-redaction.yaml"
    config.write_text("redaction:\n  enabled: false\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t_plain, _ = timed(subprocess.run, [sys.executable, "-m", "kubetrail", "--config", str(config),
                                         "--data-dir", str(work / "plain"), "--no-progress",
                                         "ingest", str(path), "--cluster", "bench"],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_verify, _ = timed(subprocess.run, [sys.executable, "-m", "kubetrail", "--data-dir",
                                          str(archive.root), "verify"], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = [str(p) for p in archive.segment_files()]
    t_sha, _ = timed(subprocess.run, ["sha256sum", *files], check=True,
                     stdout=subprocess.DEVNULL)
    return t_plain, (t_verify, t_sha, sum(Path(f).stat().st_size for f in files))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--big-gb", type=float, default=2.0)
    parser.add_argument("--skip-10m", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-webhook", action="store_true")
    args = parser.parse_args()

    path = sim_file(args.events)
    raw_bytes = path.stat().st_size
    lines = [f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — `python bench/run.py "
             f"{' '.join(sys.argv[1:])}`".rstrip(),
             "", f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, DuckDB {duckdb.__version__}.",
             f"Input: {args.events:,} simulated events, {raw_bytes / 1e6:,.0f} MB of JSON lines.", ""]
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = Path(tmp)
        t_duck = duckdb_baseline(path, work)
        t_jq = jq_baseline(path)
        archive = Archive(work / "archive")
        # As a user runs it, and like jq: a fresh process (interpreter start-up included).
        t_kt, _ = timed(subprocess.run, [sys.executable, "-m", "kubetrail", "--data-dir",
                                          str(archive.root), "--no-progress", "ingest",
                                          str(path), "--cluster", "bench"],
                        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stored = archive.connect().sql("SELECT count(*) FROM events").fetchall()[0][0]
        disk = archive.bytes_on_disk()
        rate = args.events / t_kt
        lines += ["| ingest of the same file | seconds | events/s | kubetrail ÷ it |",
                  "|---|---:|---:|---:|",
                  f"| `kubetrail ingest` (decode, normalise, dedupe, Parquet) | {t_kt:.2f} | "
                  f"{rate:,.0f} | 1.00 |",
                  f"| DuckDB `read_json` → Parquet | {t_duck:.2f} | {args.events / t_duck:,.0f} | "
                  f"{t_duck / t_kt:.2f}× |"]
        if t_jq is not None:
            lines.append(f"| `jq -c 'select(.verb == \"delete\") | {{…}}'` | {t_jq:.2f} | "
                         f"{args.events / t_jq:,.0f} | {t_jq / t_kt:.2f}× |")
        t_plain, verify = redaction_and_verify(path, archive, work)
        lines += [f"| `kubetrail ingest` with redaction off (`redaction: {{enabled: false}}`) | "
                  f"{t_plain:.2f} | {args.events / t_plain:,.0f} | redaction adds "
                  f"{100 * (t_kt / t_plain - 1):+.0f} % |"]
        lines += ["", f"`kubetrail verify` over the archive: {verify[0]:.2f} s, "
                  f"{verify[2] / 1e6 / verify[0]:,.0f} MB/s; `sha256sum` of the same segments: "
                  f"{verify[1]:.2f} s, {verify[2] / 1e6 / verify[1]:,.0f} MB/s."]
        lines += ["", f"Stored {stored:,} events: {disk / 1e6:,.1f} MB on disk, "
                  f"{disk / stored:,.0f} bytes/event, {100 * disk / raw_bytes:.1f} % of the raw JSON.",
                  ""]
        q1 = query_time(archive)
        lines += ["| filtered who-did-what query (median of 5) | events in archive | seconds |",
                  "|---|---:|---:|",
                  f"| humans' writes to deployments, secrets, pods/exec | {stored:,} | {q1:.3f} |"]
        if not args.skip_10m:
            big = scale_archive(archive, 10, work)
            q10 = query_time(big)
            lines.append(f"| the same over 10 copies | {stored * 10:,} | {q10:.3f} |")
        lines.append("")
        t_detect, t_ingest_detect, n_rules = detect_times(path, work)
        lines += [f"| detection ({n_rules} enabled rules) | seconds | events/s | vs plain ingest |",
                  "|---|---:|---:|---:|",
                  f"| `kubetrail detect` (JSON alerts) | {t_detect:.2f} | "
                  f"{args.events / t_detect:,.0f} | |",
                  f"| `kubetrail ingest --detect` | {t_ingest_detect:.2f} | "
                  f"{args.events / t_ingest_detect:,.0f} | +{100 * (t_ingest_detect / t_kt - 1):.0f} % |",
                  ""]
        t_file, t_arch = policy_simulate_times(path, archive, work)
        lines += ["| `kubetrail policy simulate` (recommended policy) | seconds | events/s |",
                  "|---|---:|---:|",
                  f"| over the log file | {t_file:.2f} | {args.events / t_file:,.0f} |",
                  f"| over the archive (`--archive`) | {t_arch:.2f} | {stored / t_arch:,.0f} |",
                  ""]
        if not args.skip_webhook:
            from webhook import webhook_benchmark

            served, bare, paced = webhook_benchmark(work)
            lines += ["| webhook, 400-event EventLists (200,000 events, detection on) | events/s "
                      "| p50 ms | p99 ms |", "|---|---:|---:|---:|",
                      f"| `kubetrail serve`, 8 batches in flight | {served['events_per_s']:,.0f} | "
                      f"{served['p50_ms']:.0f} | {served['p99_ms']:.0f} |",
                      f"| bare endpoint (reads the body, answers 200), the same | "
                      f"{bare['events_per_s']:,.0f} | {bare['p50_ms']:.0f} | {bare['p99_ms']:.0f} |",
                      f"| `kubetrail serve`, batches sent at 20,000 events/s | "
                      f"{paced['events_per_s']:,.0f} | {paced['p50_ms']:.0f} | "
                      f"{paced['p99_ms']:.0f} |",
                      "", f"kubetrail serve ÷ bare endpoint: "
                      f"{served['events_per_s'] / bare['events_per_s']:.2f}×.", ""]
        if not args.skip_memory:
            events_2gb = int(args.events * args.big_gb * 1e9 / raw_bytes)
            big_path = sim_file(events_2gb, seed=12)
            mb, secs = peak_memory(big_path, work)
            lines += [f"Peak memory (max RSS) of `kubetrail ingest` on a "
                      f"{big_path.stat().st_size / 1e9:.2f} GB file ({events_2gb:,} events): "
                      f"{mb:,.0f} MB, {secs:.0f} s ({events_2gb / secs:,.0f} events/s).", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    doc = ROOT / "docs" / "benchmarks.md"
    marker = "<!-- runs: bench/run.py adds each run below, newest first -->\n"
    intro, _, runs = doc.read_text().partition(marker) if doc.exists() else ("", "", "")
    doc.write_text((intro or "# Benchmarks\n\n") + marker + "\n" + text + runs)

if __name__ == "__main__":
    main()
