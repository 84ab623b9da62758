#!/usr/bin/env python
"""Benchmark: CNN training on short clips: fixed 128-frame crops vs ``crop_frames: auto``, time and memory.

Generates ``--clips`` clips of 0.44 s at 8 kHz (16-bit WAV, folder layout, 10 classes; class k is a
harmonic tone near ``220 * 1.12**k`` Hz, pitch +-5 % (neighbours overlap a little), random phase and
level, white noise at -5 to 10 dB SNR: learnable, not trivial) in a temporary project outside the
repository, runs the pipeline up to the features and the train log-mel statistics through
``soundstage.cli.main`` (repository ``params.yaml`` but for the data, ``process.sample_rate: 8000``,
``features.n_bands: 5``, trim off, augmentation off and no bootstrap), then trains each configuration in
its own child process and scores it with ``soundstage evaluate``:

* ``keras_cnn old``: ``crop_frames: 128`` with the loading of the previous version, restored in the
  child (:func:`old_crop_dataset`): every train clip standardized in memory up front, every epoch's
  crops of every clip materialized at once, the validation crops stacked in memory;
* ``keras_cnn 128``: ``crop_frames: 128``, crops read and standardized batch by batch;
* ``keras_cnn auto``: ``crop_frames: auto`` (the 95th percentile of the train clips' frames, 8..128),
  batch by batch;
* ``keras_mlp``: the dense net, for its per-epoch line.

Per configuration: the crop, epochs trained, seconds per epoch (from the per-epoch lines the training
prints to stderr: their mean, and their median without the first epoch, which compiles the steps), the
whole ``train`` command's wall time, its peak RSS (``os.wait4``'s ``ru_maxrss`` of the child, started by
a small launcher so that it does not inherit this process's) and the val/test accuracy of
``soundstage evaluate``.

Run from the repository root::

    nice .venv/bin/python benchmarks/bench_train.py                      # 3000 clips, early stopping
    nice .venv/bin/python benchmarks/bench_train.py --old-epochs 3       # the 128-frame runs cut at 3 epochs
    nice .venv/bin/python benchmarks/bench_train.py --quick              # smoke run: 300 clips, 2 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from soundstage import cli  # noqa: E402  (sets one thread per process and the Keras backend first)

# isort: split
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

SR = 8000
SECONDS = 0.44
N_CLASSES = 10
N_SHARDS = 2
#: name -> (model, crop_frames, the previous version's loading)
CONFIGS: dict[str, tuple[str, Any, bool]] = {
    "keras_cnn old": ("keras_cnn", 128, True),
    "keras_cnn 128": ("keras_cnn", 128, False),
    "keras_cnn auto": ("keras_cnn", "auto", False),
    "keras_mlp": ("keras_mlp", None, False),
}

# The training child: `soundstage train` as the CLI runs it, with the old loading patched in for "old".
CHILD = r"""
import sys
from soundstage import cli
params, model, out_dir, old = sys.argv[1:5]
if old == "1":
    sys.path.insert(0, sys.argv[5])
    import bench_train
    bench_train.restore_old_loading()
sys.exit(cli.main(["--params", params, "train", "--model", model, "--out-dir", out_dir, "--threads", "2"]))
"""

LAUNCHER = r"""
import json, os, subprocess, sys
log = open(sys.argv[1], "w")
t0 = __import__("time").perf_counter()
child = subprocess.Popen(sys.argv[2:], stdout=log, stderr=log)
_, status, usage = os.wait4(child.pid, 0)
wall = __import__("time").perf_counter() - t0
print(json.dumps({"maxrss_kb": usage.ru_maxrss, "wall": wall, "code": os.waitstatus_to_exitcode(status)}))
"""

EPOCH_LINE = re.compile(r"^(keras_\w+) epoch (\d+)/\d+: .*, ([0-9.]+) s$")


def old_crop_dataset(specs: Any, y: np.ndarray, *, crop_frames: int, crops_per_clip: int, batch_size: int,
                     augment: dict[str, int] | None, seed: int, standardize: Any = None) -> Any:
    """The previous version's training data, verbatim but for the standardization up front (which its
    ``train.fit`` did): each epoch draws every crop of every clip into one array, then batches it."""
    from soundstage import models as M

    keras = M._keras()
    specs = [standardize(np.asarray(s)) if standardize is not None else np.asarray(s) for s in specs]

    class RandomCrops(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self._epoch = 0
            self._n = len(specs) * crops_per_clip
            self._draw()

        def _draw(self) -> None:
            rng = M._epoch_rng(seed, self._epoch)
            crops = np.concatenate([M.random_crops(s, crop_frames=crop_frames, n=crops_per_clip, rng=rng)
                                    for s in specs])
            if augment is not None:
                crops = np.stack([M.spec_augment(c, rng=rng, **augment) for c in crops])
            labels = np.repeat(y, crops_per_clip)
            order = rng.permutation(self._n)
            self._x = crops[order, ..., None].astype(np.float32)
            self._y = labels[order]

        def __len__(self) -> int:
            return M._n_train_batches(self._n, batch_size)

        @property
        def num_batches(self) -> int:
            return len(self)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            sl = slice(i * batch_size, (i + 1) * batch_size)
            return self._x[sl], self._y[sl]

        def on_epoch_begin(self) -> None:
            self._epoch += 1
            self._draw()

    return RandomCrops()


def old_sliding(specs: Any, y: np.ndarray, *, crop_frames: int, hop_frames: int | None, batch_size: int,
                standardize: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The previous version's validation data: every sliding crop of every val clip, stacked in memory."""
    from soundstage import models as M

    specs = [standardize(np.asarray(s)) if standardize is not None else np.asarray(s) for s in specs]
    x, owner = M._stack_sliding(specs, crop_frames=crop_frames, hop_frames=hop_frames)
    return x, np.asarray(y, dtype=np.int64)[owner]


def restore_old_loading() -> None:
    """Patch the previous version's in-memory training and validation data into ``soundstage.models``."""
    from soundstage import models as M

    M._make_crop_dataset = old_crop_dataset
    M._make_sliding_dataset = old_sliding


def clip_signal(k: int, rng: np.random.Generator) -> np.ndarray:
    """0.44 s of class ``k``: a 3-harmonic tone near 220 * 1.12**k Hz (+-5 %) in white noise (-5 to 10 dB SNR)."""
    t = np.arange(int(SR * SECONDS)) / SR
    f = 220.0 * 1.12**k * rng.uniform(0.95, 1.05)
    y = sum(a * np.sin(2 * np.pi * h * f * t + rng.uniform(0, 2 * np.pi))
            for h, a in ((1, 1.0), (2, 0.5), (3, 0.25)) if h * f < SR / 2)
    y = y / np.sqrt(np.mean(y**2))
    y = y + rng.normal(0.0, 10 ** (-rng.uniform(-5, 10) / 20), size=t.size)
    return (0.9 * y / np.abs(y).max() * rng.uniform(0.2, 1.0)).astype(np.float32)


def build_project(root: Path, *, n_clips: int, epochs: int | None) -> dict[str, Any]:
    """Audio, params and the pipeline up to the features and train statistics under ``root``."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"].update(name="benchtrain", root="data/raw")
    p["data"]["folder"]["group_regex"] = None
    p["sharding"] = {"n_shards": N_SHARDS}
    p["process"]["sample_rate"] = SR
    p["process"]["trim"] = {"enabled": False, "top_db": 60.0}
    p["features"]["n_bands"] = 5  # spectral-contrast bands below Nyquist at 8 kHz
    p["split"]["ratios"] = {"train": 0.7, "val": 0.15, "test": 0.15}
    p["train"]["models"] = ["keras_mlp", "keras_cnn"]
    p["augment"]["enabled"] = False
    p["evaluate"]["bootstrap"] = 0
    p["mlflow"] = {"tracking_uri": None}
    if epochs is not None:
        for model in ("keras_mlp", "keras_cnn"):
            p[model]["epochs"] = epochs
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    rng = np.random.default_rng(2026)
    for i in range(n_clips):
        k = i % N_CLASSES
        folder = root / "data/raw" / f"c{k}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"c{k}_{i:05d}.wav", np.round(clip_signal(k, rng) * 32767).astype(np.int16), SR)
    shards = [f"{s:03d}" for s in range(N_SHARDS)]
    run(root, "ingest")
    for s in range(N_SHARDS):
        run(root, "process", "--shard", str(s))
    run(root, "split", *(f"data/process/shards/{s}.csv" for s in shards))
    for s in shards:
        run(root, "features", "--index", f"data/process/shards/{s}.csv")
    run(root, "features", "--table", "--inputs", *(f"data/features/shards/{s}.parquet" for s in shards))
    run(root, "stats", *(f"data/features/shards/{s}.parquet" for s in shards))
    lengths = pd.read_parquet(root / "data/features/table.parquet", columns=["frames"])["frames"].tolist()
    return {"params": p, "frames": sorted(set(lengths))}


def run(root: Path, *argv: str, params: str = "params.yaml") -> None:
    here = Path.cwd()
    os.chdir(root)
    try:
        if cli.main(["--params", params, *argv]) != 0:
            raise SystemExit(f"soundstage {' '.join(argv)} failed")
    finally:
        os.chdir(here)


def train_config(root: Path, name: str, params: dict[str, Any], *, epochs: int | None) -> dict[str, Any]:
    """Train one configuration in a child process (peak RSS, wall time, epoch lines) and evaluate it."""
    model, crop, old = CONFIGS[name]
    slug = name.replace(" ", "_")
    p = json.loads(json.dumps(params))
    if crop is not None:
        p[model]["crop_frames"] = crop
    if epochs is not None:
        p[model]["epochs"] = epochs
    (root / f"params_{slug}.yaml").write_text(yaml.safe_dump(p))
    log = root / f"train_{slug}.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(log), sys.executable, "-c", CHILD, f"params_{slug}.yaml", model,
         f"models/{slug}", "1" if old else "0", str(Path(__file__).resolve().parent)],
        cwd=root, env=env, capture_output=True, text=True, check=True)
    usage = json.loads(proc.stdout)
    text = log.read_text()
    if usage["code"] != 0:
        raise SystemExit(f"{name}: training failed:\n{text[-3000:]}")
    seconds = [float(m.group(3)) for m in map(EPOCH_LINE.match, text.splitlines()) if m and m.group(1) == model]
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    run(root, "evaluate", "--bundle", f"models/{slug}", "--out-dir", f"reports/{slug}", "--no-mlflow",
        params=f"params_{slug}.yaml")
    metrics = json.loads((root / f"reports/{slug}/metrics.json").read_text())
    bundle = json.loads((root / f"models/{slug}/bundle.json").read_text())
    return {"model": model, "crop_frames": (bundle.get("cnn") or {}).get("crop_frames"), "epochs": len(seconds),
            "s_per_epoch": float(np.mean(seconds)) if seconds else float("nan"),
            # without the first epoch, which compiles the train and eval steps
            "s_per_later_epoch": float(np.median(seconds[1:])) if len(seconds) > 1 else float("nan"),
            "epoch_seconds": seconds, "train_wall_s": usage["wall"], "peak_rss_mb": usage["maxrss_kb"] / 1024,
            "val_acc": metrics["val"].get("accuracy"), "test_acc": metrics["test"].get("accuracy")}


def markdown(results: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [f"{info['clips']} clips x {SECONDS} s at {SR} Hz, {N_CLASSES} classes; log-mel frames per clip: "
             f"{info['frames']}; {info['cpus']} CPU(s); epochs cap: {info['epochs']}, 128-frame runs: "
             f"{info['old_epochs']}.", "",
             "| configuration | crop (frames) | epochs | s / epoch (mean) | s / epoch (median from the 2nd) "
             "| train wall (s) | peak RSS (MB) | val acc | test acc |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['crop_frames'] or '-'} | {r['epochs']} | {r['s_per_epoch']:.1f} | "
                     f"{r['s_per_later_epoch']:.1f} | "
                     f"{r['train_wall_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['val_acc']:.3f} | {r['test_acc']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 clips, 2 epochs")
    ap.add_argument("--clips", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: params.yaml's, early stopping)")
    ap.add_argument("--old-epochs", type=int, default=None, help="cap on epochs of the two 128-frame runs")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--work", type=Path, default=None, help="project folder (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    ap.add_argument("--markdown", type=Path, default=None, help="write the table here")
    args = ap.parse_args()
    if args.quick:
        args.clips, args.epochs = 300, 2
    old_epochs = args.old_epochs or args.epochs
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_train-"))
    try:
        t0 = time.perf_counter()
        project = build_project(work, n_clips=args.clips, epochs=args.epochs)
        print(f"pipeline to features: {time.perf_counter() - t0:.0f} s; log-mel frames per clip {project['frames']}",
              flush=True)
        results = {}
        for name in args.configs:
            epochs = old_epochs if CONFIGS[name][1] == 128 else args.epochs
            results[name] = train_config(work, name, project["params"], epochs=epochs)
            r = results[name]
            print(f"{name:15s} crop {r['crop_frames'] or '-':>4}  {r['epochs']:3d} epochs  "
                  f"{r['s_per_epoch']:7.1f} s/epoch  train {r['train_wall_s']:6.0f} s  "
                  f"peak RSS {r['peak_rss_mb']:6.0f} MB  val acc {r['val_acc']:.3f}  test acc {r['test_acc']:.3f}",
                  flush=True)
        info = {"clips": args.clips, "frames": project["frames"], "cpus": os.cpu_count(),
                "epochs": args.epochs or "params.yaml (early stopping)", "old_epochs": old_epochs or "same"}
        table = markdown(results, info)
        print(table)
        if args.markdown:
            args.markdown.write_text(table)
        if args.json:
            args.json.write_text(json.dumps({"info": info, "results": results}, indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
