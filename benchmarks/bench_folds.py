#!/usr/bin/env python
"""Benchmark: K-fold cross-validation costs the features once plus K times the training.

Builds ``--clips`` short WAVs (free-spoken-digit style names: 10 digits, 6 speakers) outside the
project and two fresh copies of the project pointed at them (``bench_noop.make_project``): one with
``split.mode: ratio`` (one fold), one with ``split.mode: kfold`` and ``split.k: --k``. Each round runs,
in both projects side by side and from empty outputs, the README's command in two steps::

    snakemake ... data/features/table.parquet     # ingest -> process -> split -> features (F)
    snakemake ...                                 # per fold: stats, train, evaluate; aggregates (T)

and prints medians of F and T per side, T_K / T_1 (K if the folds cost one training each and nothing
else grew), the measured K-fold total against ``F + K x T_1`` and against the naive alternative of
running the one-split pipeline K times (``K x (F + T_1)``), and how many clips the features stage
computed on each side (each once). Run from the repository root::

    nice .venv/bin/python benchmarks/bench_folds.py                 # 2,000 clips, K = 5, 2 rounds, ~6 min
    nice .venv/bin/python benchmarks/bench_folds.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_noop import REPO, SNAKEMAKE, make_dataset, make_project, sh  # noqa: E402

OUTPUTS = ("data/ingest", "data/process", "data/split", "data/features", "data/stats", "models", "reports", "logs")


def configure(project: Path, *, k: int, models: list[str]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["split"].update({"mode": "ratio"} if k == 1 else {"mode": "kfold", "k": k})
    params["train"].update(models=models, refit=False)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def one_round(project: Path) -> dict[str, float]:
    for rel in OUTPUTS:
        shutil.rmtree(project / rel, ignore_errors=True)
    t0 = time.perf_counter()
    sh([*SNAKEMAKE, "data/features/table.parquet"], project)
    t1 = time.perf_counter()
    sh(SNAKEMAKE, project)
    t2 = time.perf_counter()
    # Clips whose log-mel the stores hold: each once, whatever the number of folds.
    table = pd.read_parquet(project / "data/features/table.parquet", columns=["frames"])
    stored = sum(np.load(p, mmap_mode="r").shape[0] for p in (project / "data/features/logmel").glob("*.npy"))
    computed = len(table) if stored == table["frames"].sum() else -1
    return {"features": t1 - t0, "folds": t2 - t1, "computed": computed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["random_forest", "keras_mlp"])
    ap.add_argument("--quick", action="store_true", help="120 clips, K = 3, the forest, one round")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.clips, args.k, args.rounds, args.models = 120, 3, 1, ["random_forest"]
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="folds-", dir=args.work))
    try:
        data = work / "recordings"
        make_dataset(data, args.clips)
        sides = {1: work / "one", args.k: work / "kfold"}
        for k, project in sides.items():
            make_project(project, data)
            configure(project, k=k, models=args.models)
        runs: dict[int, list[dict[str, float]]] = {k: [] for k in sides}
        for r in range(args.rounds):
            for k, project in sides.items():  # side by side: drift hits both alike
                runs[k].append(one_round(project))
                print(f"round {r + 1}, K={k}: {runs[k][-1]}", flush=True)
        med = {k: {key: statistics.median(x[key] for x in rs) for key in ("features", "folds")}
               for k, rs in runs.items()}
        k = args.k
        f1, t1, fk, tk = med[1]["features"], med[1]["folds"], med[k]["features"], med[k]["folds"]
        clips = {side: runs[side][0]["computed"] for side in sides}
        print(f"\n{args.clips} clips, models {', '.join(args.models)}, {args.rounds} round(s), medians, wall s:")
        print(f"  K=1 (ratio): features {f1:6.1f}  folds {t1:6.1f}  total {f1 + t1:6.1f}  "
              f"(features computed for {clips[1]} clips)")
        print(f"  K={k} (kfold): features {fk:6.1f}  folds {tk:6.1f}  total {fk + tk:6.1f}  "
              f"(features computed for {clips[k]} clips)")
        print(f"  folds T_{k} / T_1 = {tk / t1:.2f} (K = {k});  features F_{k} / F_1 = {fk / f1:.2f}")
        print(f"  K-fold total / (F_1 + {k} x T_1) = {(fk + tk) / (f1 + k * t1):.2f};  "
              f"against the one-split pipeline run {k} times ({k * (f1 + t1):.1f} s): "
              f"{k * (f1 + t1) / (fk + tk):.2f}x less")
        if args.json:
            args.json.write_text(json.dumps({"k": k, "clips": args.clips, "runs": runs, "medians": med,
                                             "computed": clips}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
