#!/usr/bin/env python
"""Benchmark: what the pipeline's storage and DVC's bookkeeping cost as the dataset grows (issue 14).

For each size in ``--sizes``, a dataset of that many short WAVs (0.3-0.6 s, 16 kHz, as in
``bench_noop.py``) plus ``--long`` long ones (60 s) is written outside the project; a fresh copy of the
project (``bench_noop.make_project`` of ``--repo``, by default this working tree: git, the regex layout,
the random forest only, the params' own ``sharding.n_shards`` unless ``--shards``) gets a local DVC remote
(a folder of the work dir). Every command runs the copy's own ``src/`` (``PYTHONPATH``), so that its
workflow and code are of one moment. After one small unmeasured warm-up run (numba's cache, private to
the benchmark, and the libraries' first reads), for each size, in order:

full run
    The README's ``snakemake --workflow-profile workflow/profiles/default --cores 2`` from nothing. Its
    wall time, and the part after its last job: the Snakefile's ``onsuccess`` (the rejection summary,
    then ``dvc commit --force --no-relink`` of every stage, which hashes every output and copies it
    into ``.dvc/cache``), timed from the moment the sampled process tree lost its last job process to
    the exit of ``snakemake``. The peak RSS of the largest process of the run (``wait4``), and of each
    kind of process (``VmHWM`` sampled every 0.2 s).
no-op, ``dvc status``, ``dvc commit``
    ``--repeat`` rounds side by side: the same ``snakemake`` with nothing to do, ``dvc status``, and
    ``dvc commit -f --no-relink`` again on the finished run (DVC re-reads the outputs' metadata and
    rehashes what its state database does not know; no new cache object).
``dvc push``
    Once, to the empty local remote.
files
    What DVC tracks (the files of every out in ``dvc.lock``: ``nfiles`` of a folder, 1 for a file),
    the objects under ``.dvc/cache`` and on the remote, the files under ``data/`` and ``.snakemake/``,
    with their bytes.

A growth table follows (each figure per size, the ratio between consecutive sizes and that ratio per
10x of clips), and, when the largest size is below ``--extrapolate``, each figure extrapolated to it from
the last two sizes, twice: the last ratio carried on, and a straight line (a fixed part plus a part per
clip); both labelled as such, never measured. Run from the repository root::

    nice .venv/bin/python benchmarks/bench_storage.py --json r.json       # 1,000 and 10,000 clips, ~7 min
    nice .venv/bin/python benchmarks/bench_storage.py --sizes 1000,10000,100000   # see the README for its time
    .venv/bin/python benchmarks/bench_storage.py --quick                  # 60 and 240 clips, smoke run
    .venv/bin/python benchmarks/bench_storage.py --report r.json          # the table of r.json again
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_noop  # noqa: E402  (the dataset, the project copy, the commands and their environment)
from bench_noop import REPO, SNAKEMAKE, make_dataset, make_project, sh, timed  # noqa: E402

NOTHING = "Nothing to be done"
SAMPLE_EVERY = 0.2  # seconds between two looks at the run's processes


# --- the dataset and the project -----------------------------------------------------------------


def add_long_clips(root: Path, n: int, seconds: float, seed: int = 1) -> None:
    """``n`` long clips beside the short ones, named as the regex layout expects (group ``long``)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        t = np.arange(int(16000 * seconds)) / 16000
        y = 0.3 * np.sin(2 * np.pi * (230 + 60 * i) * t) + 0.03 * rng.standard_normal(t.size)
        sf.write(root / f"{i % 10}_long_{i}.wav", y.astype(np.float32), 16000, subtype="PCM_16")


def prepare(work: Path, clips: int, args: argparse.Namespace) -> tuple[Path, Path]:
    """The dataset, the project (a DVC repository with a local default remote), committed to git. Every
    later command of this process runs the project's own copy of ``src/`` (``PYTHONPATH``), not the
    editable install's: the copy's workflow and code are of one moment, whatever happens meanwhile in
    the tree it was copied from."""
    data, project, remote = work / "recordings", work / "soundstage", work / "remote"
    make_dataset(data, clips)
    add_long_clips(data, args.long, args.long_seconds)
    project.mkdir()
    make_project(project, data, args.repo)
    os.environ["PYTHONPATH"] = str(project / "src")
    if args.shards is not None:
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["sharding"]["n_shards"] = args.shards
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    probe = sh(["dvc", "status"], project, check=False)
    if probe.returncode:  # the copy is not a DVC repository (no .dvc/ among the tracked files)
        if "not inside of a DVC repository" not in probe.stdout + probe.stderr:
            raise SystemExit(f"dvc status failed in the fresh project:\n{probe.stdout}\n{probe.stderr}")
        sh(["dvc", "init", "-q"], project)
    remote.mkdir()
    sh(["dvc", "remote", "add", "-d", "local", str(remote)], project)
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "remote"]):
        sh(cmd, project)
    return project, remote


def warm_up(work: Path, args: argparse.Namespace) -> float:
    """A small run of the pipeline first, not measured, so that the first size does not pay alone for
    filling numba's cache (a private one, see ``main``) and for the first reads of the libraries."""
    data, project = work / "recordings", work / "soundstage"
    make_dataset(data, 60)
    add_long_clips(data, 1, 2.0)
    make_project(project, data, args.repo)
    os.environ["PYTHONPATH"] = str(project / "src")
    t0 = time.perf_counter()
    sh(SNAKEMAKE, project)
    return time.perf_counter() - t0


# --- the full run, its processes sampled ---------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _label(pid: int) -> str:
    """``soundstage <stage>``, ``snakemake``, ``dvc``... for a process's command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [os.path.basename(a.decode(errors="replace")) for a in argv if a]
    words = [w for w in words if not w.startswith("python")] or words or ["?"]
    if words[0] == "soundstage":  # the subcommand: the first word that is no option or option value
        rest, i = words[1:], 0
        while i < len(rest) and rest[i].startswith("-"):
            i += 2
        return " ".join(["soundstage", *rest[i:i + 1]])
    return words[0]


def _hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Every ``SAMPLE_EVERY`` s: the process tree under ``pid``, the peak RSS (``VmHWM``) of each
    process by label, and the last time a job process (any descendant) was alive."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.done = pid, threading.Event()
        self.peak: dict[str, float] = {}
        self.last_child = time.perf_counter()

    def run(self) -> None:
        while not self.done.is_set():
            kids, seen, todo = _children(), [], [self.pid]
            while todo:
                p = todo.pop()
                seen.append(p)
                todo.extend(kids.get(p, []))
            if len(seen) > 1:
                self.last_child = time.perf_counter()
            for p in seen:
                hwm = _hwm_mb(p)
                if hwm:  # not gone, nor a zombie
                    label = "snakemake (main)" if p == self.pid else _label(p)
                    self.peak[label] = max(self.peak.get(label, 0.0), hwm)
            self.done.wait(SAMPLE_EVERY)


def full_run(project: Path, logs: Path) -> dict:
    """The README's command from nothing: wall, the time after the last job (onsuccess, mostly its dvc
    commit), peak RSS of the largest process and of each kind."""
    with open(logs / "full.out", "w") as out, open(logs / "full.err", "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(SNAKEMAKE, cwd=project, env=bench_noop.env(), stdout=out, stderr=err)
        sampler = Sampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        t1 = time.perf_counter()
        sampler.done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"full run failed (exit status {proc.returncode}):\n{(logs / 'full.err').read_text()[-4000:]}")
    jobs = {k: v for k, v in sampler.peak.items() if k != "snakemake (main)"}
    largest = max(jobs, key=jobs.get) if jobs else "?"
    return {"wall_s": t1 - t0, "onsuccess_s": t1 - sampler.last_child, "peak_rss_mb": usage.ru_maxrss / 1024,
            "peak_rss_main_mb": sampler.peak.get("snakemake (main)", 0.0), "largest_job": largest,
            "peak_rss_job_mb": jobs.get(largest, 0.0), "peak_rss_by_process_mb": dict(sorted(sampler.peak.items()))}


# --- what DVC tracks -----------------------------------------------------------------------------


def count(root: Path) -> tuple[int, int]:
    """Files and bytes under ``root`` (0, 0 when it does not exist)."""
    n = size = 0
    for top, _, files in os.walk(root):
        for f in files:
            n += 1
            size += os.lstat(os.path.join(top, f)).st_size
    return n, size


def by_folder(root: Path, depth: int = 2) -> dict[str, int]:
    """Files under ``root`` by their folder, ``depth`` levels down (``process/audio``...)."""
    found: dict[str, int] = {}
    for top, _, files in os.walk(root):
        if files:
            key = "/".join(Path(top).relative_to(root).parts[:depth]) or "."
            found[key] = found.get(key, 0) + len(files)
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def tracked(project: Path) -> tuple[int, int]:
    """Files and bytes DVC tracks: every out of every stage in dvc.lock (a folder's ``nfiles``)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    n = size = 0
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            n += out.get("nfiles", 1)
            size += out.get("size", 0)
    return n, size


# --- one size ------------------------------------------------------------------------------------


def measure(work: Path, clips: int, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    project, remote = prepare(work, clips, args)
    prepared = time.perf_counter() - t0
    print(f"[{clips}] dataset ({clips} + {args.long} x {args.long_seconds:g} s clips) and project: "
          f"{prepared:.1f} s", flush=True)
    r: dict = {"clips": clips, "long_clips": args.long, "prepare_s": prepared,
               "n_shards_param": yaml.safe_load((project / "params.yaml").read_text())["sharding"]["n_shards"]}
    r["full"] = full_run(project, work)
    print(f"[{clips}] full run {r['full']['wall_s']:.1f} s, after its last job (onsuccess: dvc commit) "
          f"{r['full']['onsuccess_s']:.1f} s", flush=True)
    r["shards"] = len(list((project / "data" / "process" / "shards").glob("[0-9][0-9][0-9].csv")))

    walls: dict[str, list[float]] = {"noop": [], "status": [], "commit": []}
    clean = True
    for _ in range(args.repeat):  # side by side: the machine's drift hits the three alike
        walls["noop"] += timed(SNAKEMAKE, project, 1, expect=NOTHING)
        t = time.perf_counter()
        status = sh(["dvc", "status"], project)
        walls["status"].append(time.perf_counter() - t)
        clean &= "up to date" in status.stdout
        walls["commit"] += timed(["dvc", "commit", "-f", "--no-relink"], project, 1)
    if not clean:
        print(f"[{clips}] dvc status after the run is not clean:\n{status.stdout[-1500:]}", flush=True)
    r["push_s"] = timed(["dvc", "push"], project, 1)[0]
    r.update({f"{k}_s": statistics.median(v) for k, v in walls.items()})
    r["walls"] = walls
    r["noop_nothing_to_do"] = True  # timed(..., expect=NOTHING) stops the benchmark otherwise
    r["status_clean"] = clean
    r["dvc_tracked_files"], r["dvc_tracked_bytes"] = tracked(project)
    r["cache_objects"], r["cache_bytes"] = count(project / ".dvc" / "cache" / "files")
    r["remote_objects"], r["remote_bytes"] = count(remote)
    r["data_files"], r["data_bytes"] = count(project / "data")
    r["data_files_by_folder"] = by_folder(project / "data")
    r["tracked_files_by_out"] = {out["path"]: out.get("nfiles", 1) for stage in
                                 yaml.safe_load((project / "dvc.lock").read_text())["stages"].values()
                                 for out in stage.get("outs", [])}
    r["snakemake_files"], _ = count(project / ".snakemake")
    print(f"[{clips}] no-op {r['noop_s']:.2f} s, dvc status {r['status_s']:.2f} s, dvc commit {r['commit_s']:.2f} s, "
          f"dvc push {r['push_s']:.1f} s; DVC tracks {r['dvc_tracked_files']} files, "
          f"{r['cache_objects']} cache objects, {r['data_files']} files under data/", flush=True)
    return r


# --- the table -----------------------------------------------------------------------------------

#: (label, how to read it from a size's results, unit/format)
FIGURES = [
    ("shards (sharding.n_shards)", lambda r: r["shards"], "{:.0f}"),
    ("full run (s)", lambda r: r["full"]["wall_s"], "{:.1f}"),
    ("  after the last job: onsuccess dvc commit (s)", lambda r: r["full"]["onsuccess_s"], "{:.1f}"),
    ("no-op snakemake (s)", lambda r: r["noop_s"], "{:.2f}"),
    ("dvc status (s)", lambda r: r["status_s"], "{:.2f}"),
    ("dvc commit -f --no-relink (s)", lambda r: r["commit_s"], "{:.2f}"),
    ("dvc push, once (s)", lambda r: r["push_s"], "{:.1f}"),
    ("files DVC tracks (dvc.lock outs)", lambda r: r["dvc_tracked_files"], "{:,.0f}"),
    ("objects in .dvc/cache/files", lambda r: r["cache_objects"], "{:,.0f}"),
    ("objects on the remote", lambda r: r["remote_objects"], "{:,.0f}"),
    ("files under data/", lambda r: r["data_files"], "{:,.0f}"),
    ("files under .snakemake/", lambda r: r["snakemake_files"], "{:,.0f}"),
    ("MB under data/", lambda r: r["data_bytes"] / 1e6, "{:,.0f}"),
    ("MB in .dvc/cache/files", lambda r: r["cache_bytes"] / 1e6, "{:,.0f}"),
    ("peak RSS, largest process (MB)", lambda r: r["full"]["peak_rss_mb"], "{:,.0f}"),
    ("peak RSS, snakemake main (MB)", lambda r: r["full"]["peak_rss_main_mb"], "{:,.0f}"),
    ("peak RSS, largest job (MB)", lambda r: r["full"]["peak_rss_job_mb"], "{:,.0f}"),
]


def growth(results: list[dict], extrapolate: int | None) -> tuple[list[str], list[list[str]], dict]:
    """Header, rows (figure, value per size, ratio and ratio per 10x between consecutive sizes, and the
    extrapolation), and the same figures for the JSON report."""
    sizes = [r["clips"] for r in results]
    header = ["figure", *(f"{n:,}" for n in sizes)]
    steps = list(pairwise(sizes))
    for a, b in steps:
        header += [f"x {a:,}->{b:,}"] + (["per 10x"] if b != 10 * a else [])
    if extrapolate:
        header += [f"{extrapolate:,} EXTRAPOLATED, same ratio", f"{extrapolate:,} EXTRAPOLATED, linear"]
    rows, table = [], {}
    for label, get, fmt in FIGURES:
        values = [float(get(r)) for r in results]
        row, entry = [label, *(fmt.format(v) for v in values)], {"values": values, "ratios": [], "per_10x": []}
        for (a, b), (va, vb) in zip(steps, pairwise(values), strict=True):
            ratio = vb / va if va else float("nan")
            per10 = ratio ** (1 / math.log10(b / a)) if ratio > 0 else float("nan")
            entry["ratios"].append(ratio)
            entry["per_10x"].append(per10)
            row += [f"{ratio:.2f}"] + ([f"{per10:.2f}"] if b != 10 * a else [])
        if extrapolate:
            # Two guesses from the last two sizes: the last growth carried on (value x (per-10x ratio) ^
            # decades to go), and a straight line (a fixed part plus a part per clip) through both.
            (a, b), (va, vb) = (sizes[-2], sizes[-1]), (values[-2], values[-1])
            same = vb * entry["per_10x"][-1] ** math.log10(extrapolate / b)
            line = vb + (vb - va) * (extrapolate - b) / (b - a)
            entry["extrapolated"] = {"same_ratio": same, "linear": line}
            row += [fmt.format(g) if math.isfinite(g) else "?" for g in (same, line)]
        rows.append(row)
        table[label.strip()] = entry
    return header, rows, table


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_report(report: dict) -> dict:
    """The growth table of a report (this run's, or an earlier ``--json`` one): its figures by name."""
    results = [report["results"][str(n)] for n in report["sizes"]]
    header, rows, table = growth(results, report["extrapolated_to"])
    shards = "from params.yaml" if report["shards_param"] is None else report["shards_param"]
    print(f"\nstorage and DVC bookkeeping by dataset size (+{report['long_clips']} clips of "
          f"{report['long_seconds']:g} s each; sharding.n_shards {shards}; medians of {report['repeat']}):")
    print_table(header, rows)
    print("no-op: nothing to do at every size; dvc status after the run: "
          + ("clean" if all(r["status_clean"] for r in results) else "NOT CLEAN at some size"))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="clip counts, comma-separated (100000 possible)")
    ap.add_argument("--long", type=int, default=3, help="long clips added to each dataset")
    ap.add_argument("--long-seconds", type=float, default=60.0)
    ap.add_argument("--shards", type=int, help="sharding.n_shards (default: the project's params.yaml)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds of no-op, dvc status, dvc commit")
    ap.add_argument("--extrapolate", type=int, default=100_000,
                    help="extrapolate each figure to this many clips when larger than every size (0: never)")
    ap.add_argument("--quick", action="store_true", help="sizes 60,240, one round, long clips of 10 s")
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                    help="one small unmeasured run first (default; --quick: off)")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help="the project to copy (its git tracked and new files), e.g. a clone at another commit")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--report", type=Path, help="print the table of an earlier --json report, measure nothing")
    args = ap.parse_args()
    if args.report:
        print_report(json.loads(args.report.read_text()))
        return
    if args.quick:
        args.sizes, args.repeat, args.long_seconds, args.warmup = "60,240", 1, 10.0, False
    sizes = sorted(int(s) for s in args.sizes.split(","))
    extrapolate = args.extrapolate if args.extrapolate and args.extrapolate > sizes[-1] and len(sizes) > 1 else None
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="storage-", dir=args.work))
    started = time.perf_counter()
    # numba's on-disk cache is not safe under concurrent writers (see tests/conftest.py): a private one,
    # unless the caller chose one.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(work / "numba-cache"))
    try:
        if args.warmup:
            (work / "warmup").mkdir()
            print(f"warm-up run (60 clips, not measured): {warm_up(work / 'warmup', args):.1f} s", flush=True)
        results = []
        for n in sizes:  # every run's outputs kept until the end (see the README: freed inodes)
            (work / str(n)).mkdir()
            results.append(measure(work / str(n), n, args))
        report = {"sizes": sizes, "repeat": args.repeat, "shards": [r["shards"] for r in results],
                  "shards_param": args.shards, "long_clips": args.long, "long_seconds": args.long_seconds,
                  "results": {str(r["clips"]): r for r in results}, "extrapolated_to": extrapolate}
        report["growth"] = print_report(report)
        report["wall_s"] = time.perf_counter() - started
        print(f"benchmark wall: {report['wall_s'] / 60:.1f} min")
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    except SystemExit as exc:  # the command that failed, again last (its output above may be long)
        args.keep = True
        raise SystemExit(f"{exc}\n\nbench_storage: stopped by {str(exc).splitlines()[0][:300]}\n"
                         f"(work folder kept: {work})") from None
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
