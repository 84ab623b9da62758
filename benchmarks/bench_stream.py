#!/usr/bin/env python
"""Benchmark: sliding-window predictions (``soundstage predict --window``) — speed, latency, memory.

Trains a tiny bundle of each kind (random forest, dense net, CNN) on three generated classes (a
harmonic tone, white noise, 3 kHz beeps; 2 s clips at 22.05 kHz processed at 16 kHz in 0.5 s
segments) through ``soundstage.cli.main`` in a temporary project, then:

* **speed and latency**, per model kind: :func:`soundstage.stream.iter_timed_windows` over a
  ``--seconds`` file (22.05 kHz mono 16-bit, the classes in turn) with 1 s windows every 0.5 s, in
  this one process (one BLAS/XLA thread, as ``soundstage`` sets): windows per CPU second (per core),
  the real-time factor (wall time / audio time: below 1 is faster than real time; with a 0.5 s hop
  each second of audio is two windows) and the latency from a window's last sample read to its
  result (p50, p99);
* **memory**, over 1, 10 and 60 minute files (``--minutes``): each in a fresh child process that
  imports soundstage, loads the forest's bundle and runs ``iter_windows`` (1 s windows, 1 s hop) to
  the end; its peak RSS (``os.wait4``'s ``ru_maxrss``) against a child that does everything but read
  the input (the baseline), and against decoding the whole file at once (``load_audio``, what
  ``predict_file`` starts with).

Run from the repository root::

    nice .venv/bin/python benchmarks/bench_stream.py            # about 10 minutes on 2 cores
    nice .venv/bin/python benchmarks/bench_stream.py --quick    # smoke run: 10 s file, 0.1 and 0.5 min
"""

from __future__ import annotations

import argparse
import json
import os
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
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

MODELS = ("random_forest", "keras_mlp", "keras_cnn")
CLASSES = ("tone", "noise", "beeps")
SR = 22050

CHILD = r"""
import os, sys, resource
from soundstage import cli  # one thread, as the command
from soundstage.bundle import load_bundle
from soundstage.decode import load_audio
from soundstage.stream import iter_windows
mode, bundle_dir, path = sys.argv[1:4]
bundle = load_bundle(bundle_dir)
bundle.model
n = 0
if mode == "stream":
    for _ in iter_windows(bundle, path, window=1.0, hop=1.0):
        n += 1
elif mode == "decode":
    y, sr = load_audio(path, mono=True)
    n = y.shape[-1]
print(n)
"""


LAUNCHER = r"""
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
out = child.stdout.read()
_, status, usage = os.wait4(child.pid, 0)
code = os.waitstatus_to_exitcode(status)
print(json.dumps({"maxrss_kb": usage.ru_maxrss, "out": out.decode()}))
sys.exit(code)
"""


def signal(label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """``seconds`` of class ``label`` at ``SR``: float32 mono."""
    t = np.arange(round(seconds * SR)) / SR
    if label == "tone":
        f0 = rng.uniform(250, 450)
        y = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    elif label == "noise":
        y = rng.standard_normal(t.size)
    else:
        y = np.sin(2 * np.pi * rng.uniform(2800, 3200) * t) * ((t * 8) % 1 < 0.5)
    return (y / np.max(np.abs(y)) * rng.uniform(0.3, 0.8)).astype(np.float32)


def write_long(path: Path, seconds: float, rng: np.random.Generator) -> Path:
    """A mono 16-bit WAV of ``seconds``: 10 s of each class in turn, written block by block."""
    pattern = np.concatenate([signal(label, 10.0, rng) for label in CLASSES])
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        left = round(seconds * SR)
        while left > 0:
            f.write(pattern[:left])
            left -= min(left, len(pattern))
    return path


def train_bundles(root: Path, *, quick: bool) -> dict[str, Path]:
    """The three bundles, trained through the CLI in a temporary project under ``root``."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"].update(name="benchstream", root="data/raw")
    p["data"]["folder"]["group_regex"] = None
    p["sharding"] = {"n_shards": 1}
    p["process"]["sample_rate"] = 16000
    p["process"]["duration"] = {"mode": "segment", "seconds": 0.5, "hop_seconds": 0.25, "min_seconds": 0.1,
                                "short": "pad"}
    p["split"]["ratios"] = {"train": 0.5, "val": 0.25, "test": 0.25}
    p["features"].update(n_fft=512, hop_length=128, n_mels=32, n_mfcc=13)
    p["train"]["models"] = list(MODELS)
    p["random_forest"]["n_estimators"] = 100
    p["keras_mlp"].update(hidden=[64, 32], epochs=4 if quick else 15, patience=3, batch_size=8)
    p["keras_cnn"].update(crop_frames=32, crops_per_clip=2, filters=[8, 16], epochs=2 if quick else 8, patience=2,
                          batch_size=8)
    p["mlflow"] = {"tracking_uri": None}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    rng = np.random.default_rng(7)
    for label in CLASSES:
        (root / "data/raw" / label).mkdir(parents=True, exist_ok=True)
        for i in range(8):
            y = np.round(signal(label, 2.0, rng) * 32767).astype(np.int16)
            sf.write(root / f"data/raw/{label}/{label}_{i}.wav", y, SR)
    here = Path.cwd()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.chdir(root)
    try:
        def run(*argv: str) -> None:
            if cli.main(["--params", "params.yaml", *argv]) != 0:
                raise SystemExit(f"soundstage {' '.join(argv)} failed")

        run("ingest")
        run("process", "--shard", "0")
        run("split", "data/process/shards/000.csv")
        run("features", "--index", "data/process/shards/000.csv")
        run("features", "--table", "--inputs", "data/features/shards/000.parquet")
        run("stats", "data/features/shards/000.parquet")
        for model in MODELS:
            run("train", "--model", model, "--out-dir", f"models/{model}", "--threads", "1")
    finally:
        os.chdir(here)
    return {m: root / "models" / m for m in MODELS}


def speed(bundle_dir: Path, path: Path, seconds: float) -> dict[str, float]:
    from soundstage.bundle import load_bundle
    from soundstage.stream import iter_timed_windows

    bundle = load_bundle(bundle_dir)
    bundle.model  # noqa: B018 - loading is not part of the figures
    # Warm up (first-call compilation of the Keras predict function, numba, FFT plans) on a few windows.
    for k, _ in enumerate(iter_timed_windows(bundle, path, window=1.0, hop=0.5)):
        if k == 3:
            break
    cpu0, wall0 = time.process_time(), time.perf_counter()
    latencies = [lat for _, lat in iter_timed_windows(bundle, path, window=1.0, hop=0.5)]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    p50, p99 = np.percentile(np.asarray(latencies) * 1e3, [50, 99])
    return {"windows": len(latencies), "audio_s": seconds, "wall_s": wall, "cpu_s": cpu,
            "windows_per_cpu_s": len(latencies) / cpu, "rtf": wall / seconds,
            "latency_p50_ms": float(p50), "latency_p99_ms": float(p99)}


def peak_rss(mode: str, bundle_dir: Path, path: Path) -> tuple[float, float, int]:
    """``(peak RSS in MB, wall seconds, count printed)`` of a child process running ``CHILD``.

    The child is started by a small launcher that reads its ``ru_maxrss`` with ``os.wait4``: Linux
    starts a child's ``ru_maxrss`` at its parent's RSS (carried through fork and exec), so children of
    this process, which trained Keras models, would all report about its size.
    """
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", LAUNCHER, sys.executable, "-c", CHILD, mode, str(bundle_dir), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    return report["maxrss_kb"] / 1024, time.perf_counter() - t0, int(report["out"].strip() or 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the speed/latency file")
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0, 60.0], help="memory file lengths")
    ap.add_argument("--quick", action="store_true", help="10 s speed file, 0.1 and 0.5 min memory files")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.minutes = 10.0, [0.1, 0.5]
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stream-", dir=args.work))
    report: dict[str, Any] = {"speed": {}, "memory": {}}
    try:
        t0 = time.perf_counter()
        bundles = train_bundles(work / "project", quick=args.quick)
        print(f"trained {len(bundles)} bundles in {time.perf_counter() - t0:.0f} s")
        rng = np.random.default_rng(11)
        path = write_long(work / "speed.wav", args.seconds, rng)
        report["load_average"] = os.getloadavg()
        print(f"\nspeed: {args.seconds:g} s file (22.05 kHz mono), 1 s windows every 0.5 s, one thread "
              f"(load average {report['load_average'][0]:.1f} on {os.cpu_count()} cores)")
        print(f"{'model':<15}{'windows':>9}{'win/CPU s':>11}{'RTF':>8}{'x real time':>13}{'p50 ms':>9}{'p99 ms':>9}")
        for model, bundle_dir in bundles.items():
            s = speed(bundle_dir, path, args.seconds)
            report["speed"][model] = s
            print(f"{model:<15}{s['windows']:>9}{s['windows_per_cpu_s']:>11.1f}{s['rtf']:>8.3f}"
                  f"{1 / s['rtf']:>13.1f}{s['latency_p50_ms']:>9.2f}{s['latency_p99_ms']:>9.2f}")

        print("\nmemory: peak RSS of a child process (random forest; 1 s windows, 1 s hop)")
        base_rss, _, _ = peak_rss("none", bundles["random_forest"], path)
        report["memory"]["baseline_mb"] = base_rss
        print(f"baseline (imports, bundle loaded, no input read): {base_rss:.0f} MB")
        print(f"{'minutes':>8}{'file MB':>9}{'windows':>9}{'stream RSS MB':>15}{'wall s':>8}{'decode-all RSS MB':>19}")
        for minutes in args.minutes:
            f = write_long(work / f"long_{minutes:g}.wav", minutes * 60, rng)
            rss, wall, n = peak_rss("stream", bundles["random_forest"], f)
            decode_rss, _, _ = peak_rss("decode", bundles["random_forest"], f)
            size_mb = f.stat().st_size / 1e6
            report["memory"][f"{minutes:g}"] = {"file_mb": size_mb, "windows": n, "stream_rss_mb": rss,
                                                "wall_s": wall, "decode_rss_mb": decode_rss}
            print(f"{minutes:>8g}{size_mb:>9.1f}{n:>9}{rss:>15.0f}{wall:>8.1f}{decode_rss:>19.0f}")
            f.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
