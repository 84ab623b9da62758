#!/usr/bin/env python
"""Benchmark: a no-op ``snakemake`` on a finished pipeline of many clips (target: under 10 s at 10,000).

Builds a dataset of ``--clips`` short WAVs (0.3-0.6 s, 16 kHz, free-spoken-digit style names) outside
the project, copies the project into a temporary folder as a fresh clone pointed at it (regex layout,
the random forest only), runs the whole pipeline once, then times, ``--repeat`` times each, side by side:

floor
    ``snakemake`` on a one-rule workflow whose single output exists: Snakemake's own start-up and
    DAG, the least any no-op can cost.
soundstage
    The README's command, ``snakemake --workflow-profile workflow/profiles/default --cores 2``, on the
    finished pipeline: start-up, the Snakefile (params validation, the run guard with its recovery
    walk over the outputs, the dataset fingerprint), the DAG of every job, and nothing to run.
dry run, ``dvc status``
    The same look with ``-n``, and DVC's own view of the finished pipeline.

Medians (and ranges) of wall time are printed, with the guard's and the fingerprint's share measured
in-process. Run from the repository root::

    nice .venv/bin/python benchmarks/bench_noop.py               # 10,000 clips, ~5 minutes
    nice .venv/bin/python benchmarks/bench_noop.py --clips 1000  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = ["snakemake", "--workflow-profile", "workflow/profiles/default", "--cores", "2"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SNAKEMAKE_", "DVC_", "MLFLOW_"))}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
             KERAS_BACKEND="jax", DVC_NO_ANALYTICS="1")
    return e


def sh(cmd: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_dataset(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    speakers = ["ann", "bob", "cat", "dan", "eve", "fay"]
    for i in range(n):
        t = np.arange(int(16000 * rng.uniform(0.3, 0.6))) / 16000
        y = 0.3 * np.sin(2 * np.pi * (200 + 60 * (i % 10)) * t) + 0.03 * rng.standard_normal(t.size)
        sf.write(root / f"{i % 10}_{speakers[i // 10 % 6]}_{i // 60}.wav", y.astype(np.float32), 16000,
                 subtype="PCM_16")


def make_project(dest: Path, data: Path, repo: Path = REPO) -> None:
    # The tracked files and the new ones not yet added (not the ignored, nor a local run's reports and data).
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, text=True, check=True).stdout
    new = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout
    new = [f for f in new.split("\0") if not f.startswith(("reports/", "data/"))]
    for rel in filter(None, files.split("\0") + new):
        if not (repo / rel).is_file():  # deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"].update(name="noop", root=str(data), layout="regex")
    params["data"]["regex"]["pattern"] = r"(?P<label>\d)_(?P<group>[a-z]+)_\d+\.wav"
    params["process"]["sample_rate"] = 16000
    params["train"]["models"] = ["random_forest"]
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = yaml.safe_load((dest / "dvc.yaml").read_text())
    del dvc["stages"]["demo"]  # the README's step for one's own data
    (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    (dest / "dvc.lock").unlink(missing_ok=True)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "clone"]):
        sh(cmd, dest)


def timed(cmd: list[str], cwd: Path, repeat: int, *, expect: str | None = None) -> list[float]:
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = sh(cmd, cwd)
        walls.append(time.perf_counter() - t0)
        if expect is not None and expect not in proc.stdout + proc.stderr:
            raise SystemExit(f"{' '.join(cmd)}: expected {expect!r}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return walls


def parts(project: Path, data: Path) -> dict[str, float]:
    """The guard (lock + recovery walk) and the dataset fingerprint, timed in a fresh process."""
    code = f"""
import time, json
t0 = time.perf_counter()
from soundstage import runlock
from soundstage.ingest import fingerprint_tree
t1 = time.perf_counter()
g = runlock.guard({str(project)!r}, read_only=False, take_dvc_lock=True)
t2 = time.perf_counter()
fingerprint_tree({str(data)!r}, ["wav"])
t3 = time.perf_counter()
print(json.dumps({{"imports": t1 - t0, "guard": t2 - t1, "fingerprint": t3 - t2}}))
"""
    return json.loads(sh([sys.executable, "-c", code], project).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="noop-", dir=args.work))
    try:
        data, project, floor = work / "recordings", work / "soundstage", work / "floor"
        t0 = time.perf_counter()
        make_dataset(data, args.clips)
        make_project(project, data)
        floor.mkdir()
        (floor / "Snakefile").write_text('rule all:\n    output: "done"\n    shell: "touch {output}"\n')
        sh(["snakemake", "--cores", "1"], floor)
        print(f"dataset of {args.clips} clips and project: {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        sh(SNAKEMAKE, project)
        print(f"first run (the whole pipeline): {time.perf_counter() - t0:.1f} s", flush=True)
        n_files = sum(len(f) for _, _, f in os.walk(project / "data"))
        results = {}
        for _ in range(args.repeat):  # pairs side by side: drift hits both alike
            for name, cmd, cwd, expect in (("floor", ["snakemake", "--cores", "1"], floor, "Nothing to be done"),
                                           ("soundstage", SNAKEMAKE, project, "Nothing to be done"),
                                           ("dry run", [*SNAKEMAKE, "-n"], project, "Nothing to be done"),
                                           ("dvc status", ["dvc", "status"], project, "up to date")):
                results.setdefault(name, []).extend(timed(cmd, cwd, 1, expect=expect))
        split = parts(project, data)
        print(f"\nno-op on {args.clips} clips ({n_files} files under data/), {args.repeat} runs each, wall s:")
        for name, walls in results.items():
            print(f"  {name:<11} median {statistics.median(walls):6.2f}  ({min(walls):.2f}-{max(walls):.2f})")
        print(f"  in-process: imports {split['imports']:.2f}, guard {split['guard']:.2f}, "
              f"dataset fingerprint {split['fingerprint']:.2f}")
        verdict = "OK" if statistics.median(results["soundstage"]) < 10 else "OVER"
        print(f"target: no-op under 10 s at 10,000 clips: {verdict}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
