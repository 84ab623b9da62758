#!/usr/bin/env python
"""Benchmark: what users run, end to end, on datasets shaped like real ones, against four references.

Datasets, generated outside the project (tones, harmonics, beats and noise: ``bench_features.synth``):

short
    ``--n-short`` clips of 0.44 s, 8 kHz 16-bit mono WAV, spoken-digit names ``<digit>_<speaker>_<n>.wav``
    in one folder (regex layout ``(?P<label>\\d)_(?P<group>[a-z]+)_\\d+\\.wav``), default 3,000.
30s
    ``--n-30s`` clips of 30 s, 22.05 kHz 16-bit mono WAV, one folder per class, default 100.
long
    ``--n-long`` files of ``--long-seconds`` (10 minutes), 22.05 kHz, one folder per class, default 4.
30s-1000 (``--with-1000``)
    1,000 clips of 30 s, as 30s (too slow for the default run).

Sides, side by side in ``--rounds`` alternating rounds (medians and ranges), the page cache dropped
(as root; else only the dataset's files) before each side, each side a fresh process tree started by
a small launcher that reads its CPU time and peak RSS with ``os.wait4``:

soundstage
    The real command in a fresh copy of the project (``bench_noop.make_project``: the ``git ls-files``
    copied, data outside it; the repository's params.yaml except the data section and
    ``train.models: [random_forest]``, no demo stage): ``snakemake --workflow-profile
    workflow/profiles/default --cores 2 data/features/table.parquet data/stats/0/logmel.npz`` (ingest,
    process and features per shard, split, the features table, the train-split statistics). The shard
    count is the project's ``sharding.n_shards`` (``--shards N`` overrides it). A new project folder per
    round, all deleted at the end (benchmarks/README.md: ext4 and recently freed inodes).
seed-style / fair reference
    ``bench_features``' serial librosa references, run by its own child entry point: one librosa call
    per feature each recomputing the STFT, or one STFT per clip passed as ``S=`` to every feature.
essentia / openSMILE
    Serial, one core: essentia's standard algorithms (``MonoLoader`` at 22.05 kHz, Hann frames of 2048
    every 512, MFCC from 128 mel bands, HPCP chroma, centroid, spread, roll-off, spectral contrast,
    flatness, RMS, zero-crossing rate, mean/std per clip); the ``opensmile`` package's
    ``--opensmile-set`` functionals (ComParE_2016 by default) at the file's own rate. In the first
    ``--ext-rounds`` rounds only (default 1). Where the package is not installed (``make bench-refs``
    installs the ``bench`` extra), the side says so and the rest runs.

Then ``make run``'s pipeline on the demo: the whole default ``snakemake --workflow-profile
workflow/profiles/default --cores 2`` in a fresh copy with the repository's params, once with
``train.models: [random_forest, keras_mlp]`` and, with ``--demo-all-models``, once with the default
models (the CNN as well).

Reported per dataset and side: wall s (launch to exit, imports included on every side), CPU s (children
included), x realtime per core (audio s / CPU s), x realtime wall (audio s / wall s), peak RSS of the
largest process and the peak sum of PSS over the side's processes, and ratios against both librosa
references. For soundstage, where the fixed cost goes: Snakemake's start-up and DAG (launch to the first
job's start, from ``.snakemake/metadata``), each rule's jobs, the time inside the run with no job
running, process start and imports per job (a fresh ``python -c 'import soundstage.cli,
soundstage.process, soundstage.features'``) times the job count, the audio work that is left, and the
run-end bookkeeping (the last job's end to the command's exit). Run from the repository root::

    nice .venv/bin/python benchmarks/bench_e2e.py                 # ~23 minutes on 2 (shared) cores
    nice .venv/bin/python benchmarks/bench_e2e.py --quick         # smoke run, ~3 minutes

``--json FILE`` also writes every number; ``--work`` / ``--keep`` as in ``bench_features.py``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_features, bench_noop (imported in main: the essentia and
# openSMILE sides run this file in a process that need not have soundstage)

SR = 22050  # the references' and essentia's rate; the project's process.sample_rate default
N_FFT, HOP, N_MELS, N_MFCC = 2048, 512, 128, 20
SPEAKERS = ("ann", "bob", "cat", "dan", "eve", "fay")
DIGITS_PATTERN = r"(?P<label>\d)_(?P<group>[a-z]+)_\d+\.wav"
#: Sides: key -> label in the report. Seed-style and fair are bench_features' references.
SIDES = {"soundstage": "soundstage", "reference": "seed-style", "fair": "fair ref.", "essentia": "essentia",
         "opensmile": "openSMILE"}
EXTERNAL = {"essentia": "essentia.standard", "opensmile": "opensmile"}

# Runs a command, waits for it with os.wait4 and writes its CPU time and peak RSS (the largest single
# process among it and every descendant waited for) to argv[1]. A launcher of its own, because Linux
# starts a child's ru_maxrss at its parent's RSS (benchmarks/README.md, bench_stream.py).
LAUNCHER = r"""
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"utime": usage.ru_utime, "stime": usage.ru_stime, "maxrss_kb": usage.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


# ---------------------------------------------------------------------------------------------
# Datasets


def dataset_specs(args: argparse.Namespace) -> dict[str, dict]:
    specs = {
        "short": {"n": args.n_short, "seconds": 0.44, "sr": 8000, "layout": "regex"},
        "30s": {"n": args.n_30s, "seconds": 30.0, "sr": SR, "layout": "folder"},
        "long": {"n": args.n_long, "seconds": args.long_seconds, "sr": SR, "layout": "folder"},
    }
    if args.with_1000:
        specs["30s-1000"] = {"n": 1000, "seconds": 30.0, "sr": SR, "layout": "folder"}
    return {k: v for k, v in specs.items() if k in (*args.datasets, "30s-1000")}


def _write_clip(job: tuple[str, int, float, str, int]) -> float:
    import bench_features as bf
    import soundfile as sf

    path, seed, seconds, label, sr = job
    bf.RAW_SR = sr  # synth() writes at the module's rate: this dataset's
    y = bf.synth(seed, seconds, label)[:, 0]  # one channel: mono
    sf.write(path, y, sr, subtype="PCM_16", format="WAV")
    return len(y) / sr


def make_dataset(root: Path, spec: dict, *, seed: int, pool) -> list[dict]:
    """Write the clips under ``root``; manifest rows (id, path, label, group, duration) for the references."""
    from bench_features import LABELS

    jobs, rows = [], []
    for i in range(spec["n"]):
        if spec["layout"] == "regex":  # spoken digits: 10 digits x 6 speakers x n takes
            digit = i % 10
            label, rel = str(digit), f"{digit}_{SPEAKERS[i // 10 % len(SPEAKERS)]}_{i // 60}.wav"
            style = LABELS[digit % len(LABELS)]
        else:
            label = style = LABELS[i % len(LABELS)]
            rel = f"{label}/{label}.{i:05d}.wav"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((str(path), seed * 100_003 + i, spec["seconds"], style, spec["sr"]))
        rows.append({"id": rel.removesuffix(".wav"), "path": str(path), "label": label, "group": rel})
    for row, duration in zip(rows, pool.map(_write_clip, jobs, chunksize=8), strict=True):
        row["duration"] = duration
    return rows


# ---------------------------------------------------------------------------------------------
# Projects


def project_template(dest: Path, data: Path, spec: dict | None, *, models: list[str], shards: int | None,
                     quick_demo: bool = False) -> None:
    """A fresh copy of the project (``bench_noop.make_project``) with the repository's params.yaml, then
    the dataset's data section (``spec``; None: the demo, with the demo stage of dvc.yaml kept),
    ``train.models`` and, when given, ``sharding.n_shards``."""
    import yaml
    from bench_noop import REPO, make_project

    make_project(dest, data)  # copies `git ls-files`; its params are replaced below
    # ... and the working tree's new files not yet in git (a module the rules already name), so that the
    # copy runs what the tree runs
    new = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    for rel in filter(None, new.split("\0")):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if spec is None:
        shutil.copy2(REPO / "dvc.yaml", dest / "dvc.yaml")  # the demo stage is the demo's
        if quick_demo:  # a smoke run of the code path: a smaller demo, fewer trees and resamples
            params["demo"].update(n_classes=3, clips_per_class=8, duration=2.0)
            params["random_forest"]["n_estimators"] = 50
            params["evaluate"]["bootstrap"] = 50
    else:
        params["data"].update(name=data.name, root=str(data), layout=spec["layout"])
        params["data"]["folder"]["group_regex"] = None  # the demo's pattern: each clip its own group
        if spec["layout"] == "regex":
            params["data"]["regex"]["pattern"] = DIGITS_PATTERN
    params["train"]["models"] = models
    if shards:
        params["sharding"]["n_shards"] = shards
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stats_target(project: Path) -> str:
    """The train-split statistics of the first fold: ``data/stats/<fold>/logmel.npz``. The fold ids are
    the split's (``soundstage.split.fold_ids``), only known once it ran: a ratio split has one, ``0``."""
    import yaml

    split = yaml.safe_load((project / "params.yaml").read_text())["split"]
    if split["mode"] != "ratio":
        raise SystemExit(f"bench_e2e: split.mode {split['mode']!r}: only the ratio split's fold 0 is timed")
    return "data/stats/0/logmel.npz"


def check_fold(project: Path, target: str) -> None:
    from soundstage.split import fold_ids

    folds = fold_ids(json.loads((project / "data/split/folds.json").read_text()), refit=False)
    if target != f"data/stats/{folds[0]}/logmel.npz":
        raise SystemExit(f"bench_e2e: the split wrote folds {folds}, the benchmark timed {target}")


def shard_setting(project: Path):
    import yaml

    return yaml.safe_load((project / "params.yaml").read_text())["sharding"]["n_shards"]


# ---------------------------------------------------------------------------------------------
# Running a side


#: Before each side: drop the whole page cache (where allowed), then rest this many seconds
#: (``bench_features.side``'s 1 s). --quick, a smoke run, only evicts the dataset's files.
COLD = {"drop": True, "settle": 1.0}


def cold(paths) -> bool:
    """Written data to disk, the dataset's files out of the page cache, the whole page cache dropped
    where allowed (root); as ``bench_features.side`` does before each side."""
    import bench_features as bf

    os.sync()
    bf.evict(paths)
    dropped = COLD["drop"] and bf.drop_page_cache()
    time.sleep(COLD["settle"])
    return dropped


def launch(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run ``cmd`` under :data:`LAUNCHER`: wall, CPU (children included), peak RSS of the largest process,
    peak PSS sum of the tree (``bench_features.TreeSampler``, less this process), epoch launch and exit."""
    import bench_features as bf

    usage = log.with_suffix(".usage.json")
    own_pss = bf._memory(os.getpid())[1]
    with open(log, "w") as out, bf.TreeSampler(interval=0.2, refresh=0.5) as sampler:
        t_launch, t0 = time.time(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(usage), *cmd], cwd=cwd, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
    t_exit = t_launch + wall  # one clock for the wall time and its parts
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-5000:]}")
    u = json.loads(usage.read_text())
    return {"wall": wall, "cpu_s": u["utime"] + u["stime"], "rss_max_proc_mb": u["maxrss_kb"] / 1024,
            "pss_tree_mb": max(0, sampler.pss - own_pss) / 2**20, "t_launch": t_launch, "t_exit": t_exit,
            "load": os.getloadavg()[0]}


def run_soundstage(template: Path, project: Path, manifest: list[dict], *, targets: list[str] | None) -> dict:
    """The README's command in a fresh copy of ``template``: its figures and where the time went."""
    from bench_noop import SNAKEMAKE, env

    shutil.copytree(template, project, symlinks=True)
    dropped = cold(row["path"] for row in manifest)
    r = launch([*SNAKEMAKE, *(targets or [])], project, env(), project.parent / f"{project.name}.log")
    r.update(page_cache_dropped=dropped, **timeline(project, r["t_launch"], r["t_exit"]))
    r["shards"] = len(list((project / "data/process/shards").glob("[0-9][0-9][0-9].csv")))
    r["n_shards_param"] = shard_setting(project)
    table = project / "data/features/table.parquet"
    if table.exists():
        import pyarrow.parquet as pq

        r["table_rows"] = pq.read_metadata(table).num_rows
    return r


def timeline(project: Path, t_launch: float, t_exit: float) -> dict:
    """Jobs from Snakemake's records (``.snakemake/metadata``: one per output; ``starttime`` is when the
    job's incomplete marker was written, ``endtime`` its output's mtime), and the run's time split into
    start-up + DAG (launch to the first job), the jobs' span, and the end (last job to exit)."""
    jobs: dict[tuple, dict] = {}
    for path in (project / ".snakemake/metadata").rglob("*"):
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        job = jobs.setdefault((rec["rule"], rec["job_hash"]),  # one record per output of the job
                              {"rule": rec["rule"], "start": rec["starttime"], "end": rec["endtime"]})
        job["start"], job["end"] = min(job["start"], rec["starttime"]), max(job["end"], rec["endtime"])
    jobs_list = sorted(jobs.values(), key=lambda j: j["start"])
    if not jobs_list:
        return {"jobs": [], "breakdown": None}
    first, last = jobs_list[0]["start"], max(j["end"] for j in jobs_list)
    busy, cur_start, cur_end = 0.0, None, None  # union of the jobs' intervals
    for j in jobs_list:
        if cur_end is None or j["start"] > cur_end:
            busy += 0.0 if cur_end is None else cur_end - cur_start
            cur_start, cur_end = j["start"], j["end"]
        else:
            cur_end = max(cur_end, j["end"])
    busy += cur_end - cur_start
    by_rule: dict[str, dict] = {}
    for j in jobs_list:
        by_rule.setdefault(j["rule"], []).append(j["end"] - j["start"])
    rules = {rule: {"jobs": len(d), "sum_s": sum(d), "median_s": statistics.median(d), "max_s": max(d)}
             for rule, d in by_rule.items()}
    return {"jobs": [{**j, "start": j["start"] - t_launch, "end": j["end"] - t_launch} for j in jobs_list],
            "breakdown": {"startup_dag_s": first - t_launch, "jobs_span_s": last - first, "end_s": t_exit - last,
                          "no_job_running_s": (last - first) - busy, "n_jobs": len(jobs_list),
                          "job_sum_s": sum(j["end"] - j["start"] for j in jobs_list), "rules": rules}}


def run_reference(kind: str, manifest: list[dict], folder: Path, *, opensmile_set: str) -> dict:
    """A reference side in its own process: bench_features' child entry point (seed-style, fair) or
    this file's (essentia, openSMILE). Wall and CPU are the whole process's (imports, warm-up and all);
    the child's own timing of its loop is ``work_wall``."""
    import bench_features as bf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    script = bf.__file__ if kind in ("reference", "fair") else __file__
    cmd = [sys.executable, script, "--_side", kind, "--_work", str(folder), "--workers", "1", "--shards", "1"]
    if script == __file__:
        cmd += ["--opensmile-set", opensmile_set]
    dropped = cold(row["path"] for row in manifest)
    r = launch(cmd, folder, dict(os.environ), folder / "side.log")
    res = json.loads((folder / "result.json").read_text())
    return {**r, "page_cache_dropped": dropped, "work_wall": res["wall"], "work_cpu_s": res["cpu_s"],
            "clips": res["clips"], "ref_audio_s": res["audio_s"], "features": res.get("features")}


def import_time(cwd: Path, repeat: int = 3) -> float:
    """Median wall time of a fresh ``python -c 'import soundstage.cli, soundstage.process, soundstage.features'``
    (after one untimed run: the page cache warm, as for every job but the first)."""
    from bench_noop import sh

    code = "import soundstage.cli, soundstage.process, soundstage.features"
    walls = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        sh([sys.executable, "-c", code], cwd)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls[1:])


def dry_run(project: Path, targets: list[str]) -> float:
    """``snakemake -n`` on the finished run: start-up and DAG with nothing to run."""
    from bench_noop import SNAKEMAKE, sh

    t0 = time.perf_counter()
    sh([*SNAKEMAKE, "-n", *targets], project)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# essentia and openSMILE sides (this file's child entry point; needs only numpy and the package)


def _essentia_extractor():
    import essentia.standard as es
    import numpy as np

    window, spectrum = es.Windowing(type="hann", size=N_FFT), es.Spectrum(size=N_FFT)
    mfcc = es.MFCC(inputSize=N_FFT // 2 + 1, sampleRate=SR, numberBands=N_MELS, numberCoefficients=N_MFCC,
                   highFrequencyBound=SR / 2)
    peaks, hpcp = es.SpectralPeaks(sampleRate=SR), es.HPCP(size=12, sampleRate=SR)
    centroid, moments, shape = es.Centroid(range=SR / 2), es.CentralMoments(range=SR / 2), es.DistributionShape()
    rolloff, contrast = es.RollOff(sampleRate=SR), es.SpectralContrast(frameSize=N_FFT, sampleRate=SR)
    flatness, rms, zcr = es.Flatness(), es.RMS(), es.ZeroCrossingRate()

    def clip(path: str) -> tuple[dict[str, float], float]:
        y = es.MonoLoader(filename=path, sampleRate=SR)()
        frames: dict[str, list] = {k: [] for k in ("mfcc", "logmel", "chroma", "centroid", "bandwidth", "rolloff",
                                                    "contrast", "valleys", "flatness", "rms", "zcr")}
        for frame in es.FrameGenerator(y, frameSize=N_FFT, hopSize=HOP, startFromZero=False):
            spec = spectrum(window(frame))
            bands, coeffs = mfcc(spec)
            frames["mfcc"].append(coeffs)
            frames["logmel"].append(10 * np.log10(bands + 1e-10))
            frames["chroma"].append(hpcp(*peaks(spec)))
            frames["centroid"].append(centroid(spec))
            frames["bandwidth"].append(np.sqrt(max(shape(moments(spec))[0], 0.0)))
            frames["rolloff"].append(rolloff(spec))
            c, v = contrast(spec)
            frames["contrast"].append(c)
            frames["valleys"].append(v)
            frames["flatness"].append(flatness(spec))
            frames["rms"].append(rms(frame))
            frames["zcr"].append(zcr(frame))
        feats = {k: np.asarray(v, dtype=np.float64).reshape(len(v), -1).T for k, v in frames.items()}
        m = feats["mfcc"]
        feats["mfcc"] = np.concatenate([m, np.gradient(m, axis=1) if m.shape[1] > 1 else 0 * m,
                                        np.gradient(np.gradient(m, axis=1), axis=1) if m.shape[1] > 2 else 0 * m])
        summary = {}
        for name, x in feats.items():
            if name == "logmel":
                continue  # kept as the references keep theirs, for statistics: not a summary column
            for stat, values in (("mean", x.mean(axis=1)), ("std", x.std(axis=1))):
                summary.update({f"{name}_{stat}_{i:02d}": float(v) for i, v in enumerate(values)})
        return summary, len(y) / SR

    return clip


def _opensmile_extractor(feature_set: str):
    import opensmile

    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                            feature_level=opensmile.FeatureLevel.Functionals)

    def clip(path: str) -> tuple[dict[str, float], float]:
        frame = smile.process_file(path)
        seconds = frame.index.get_level_values("end")[0].total_seconds()
        return frame.iloc[0].to_dict(), seconds

    return clip


def run_external(kind: str, work: Path, feature_set: str) -> None:
    """One side, serial: imports and a first clip (warm-up) untimed, then every clip."""
    manifest = json.loads((work / "manifest.json").read_text())
    clip = _essentia_extractor() if kind == "essentia" else _opensmile_extractor(feature_set)
    clip(manifest[0]["path"])
    t0, c0 = time.perf_counter(), time.process_time()
    rows, audio = [], 0.0
    for row in manifest:
        summary, seconds = clip(row["path"])
        rows.append(summary)
        audio += seconds
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {"wall": wall, "cpu_s": cpu, "audio_s": audio, "clips": len(rows), "features": len(rows[0])}
    (work / "result.json").write_text(json.dumps(result))


def installed(kind: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {EXTERNAL[kind]}"], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------------
# Report


def ranges(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else ""


def summarize(runs: list[dict], audio_s: float) -> dict:
    import bench_features as bf

    med = bf.median_run(runs)
    med["audio_s"] = audio_s
    med["rounds"] = len(runs)
    return med


def ratio_cells(runs: dict, key: str, ref: str) -> tuple[str, float | None, list[float]]:
    """``ref``'s median wall / ``key``'s, with the per-round ratios where both ran in the same rounds."""
    a, b = runs.get(ref), runs.get(key)
    if not a or not b or a.get("status") or b.get("status"):
        return "", None, []
    value = a["wall"] / b["wall"]
    per_round = [x / y for x, y in zip(a["walls"], b["walls"], strict=False)]
    cell = f"{value:.1f}x" + (f" ({min(per_round):.1f}-{max(per_round):.1f})" if len(per_round) > 1 else "")
    return cell, value, per_round


def print_report(data: dict, args: argparse.Namespace) -> None:
    if data["sets"]:
        print_sets(data, args)
    if data.get("demo"):
        print()
        print("make run's pipeline on the demo (whole default snakemake, fresh copy, default params):")
        for label, d in data["demo"].items():
            b = d["breakdown"]
            top = sorted(b["rules"].items(), key=lambda kv: -kv[1]["sum_s"])[:5]
            print(f"  models {label}: wall {d['wall']:.1f} s, CPU {d['cpu_s']:.1f} s, RSS proc "
                  f"{d['rss_max_proc_mb']:.0f} MB; start-up + DAG {b['startup_dag_s']:.2f}, jobs "
                  f"{b['jobs_span_s']:.1f} (no job running "
                  f"{b['no_job_running_s']:.2f}), run end {b['end_s']:.2f}; {b['n_jobs']} jobs, "
                  f"{b['job_sum_s']:.1f} job-s; largest: " + ", ".join(f"{k} {v['sum_s']:.1f}" for k, v in top))
    print(f"\ntotal benchmark time {data['total_s']:.0f} s (datasets and project copies included)")


def print_sets(data: dict, args: argparse.Namespace) -> None:
    line = "-" * 150
    print()
    print(f"soundstage end to end  ({os.cpu_count()} CPUs; soundstage: snakemake --cores 2; references: 1 process; "
          f"{args.rounds} round(s), medians)")
    print(line)
    print(f"{'dataset':<10}{'side':<12}{'clips':>6}{'audio s':>9}{'wall s':>8}{'(range)':>13}{'CPU s':>8}"
          f"{'xRT/core':>10}{'xRT wall':>10}{'RSS proc MB':>13}{'PSS sum MB':>12}{'vs seed-style':>20}"
          f"{'vs fair ref.':>20}")
    print(line)
    for name, runs in data["sets"].items():
        ds = data["datasets"][name]
        for key, label in SIDES.items():
            r = runs.get(key)
            if r is None:
                continue
            if r.get("status"):
                print(f"{name:<10}{label:<12}  {r['status']}")
                continue
            vs_seed = ratio_cells(runs, key, "reference")[0]
            vs_fair = ratio_cells(runs, key, "fair")[0]
            print(f"{name:<10}{label:<12}{r['clips']:>6}{ds['audio_s']:>9.0f}{r['wall']:>8.2f}"
                  f"{ranges(r['walls']):>13}{r['cpu_s']:>8.2f}{ds['audio_s'] / r['cpu_s']:>10.0f}"
                  f"{ds['audio_s'] / r['wall']:>10.0f}{r['rss_max_proc_mb']:>13.0f}{r['pss_tree_mb']:>12.0f}"
                  f"{vs_seed:>20}{vs_fair:>20}")
    print(line)
    print("wall = launch to exit of the side's process tree (interpreter start, imports, JIT warm-up included on")
    print("every side); CPU = user + system of every process (os.wait4); xRT/core = audio s / CPU s; xRT wall =")
    print("audio s / wall s; RSS proc = the largest single process's peak (ru_maxrss); PSS sum = peak over time of")
    print("the side's processes' PSS (sampled every 0.2 s); vs X = X's median wall / this side's (per-round range).")
    print("The references' loops alone (interpreter start, imports and warm-up left out; medians, wall s):")
    for name, runs in data["sets"].items():
        loops = [f"{SIDES[k]} {r['work_wall']:.2f}" for k, r in runs.items() if "work_wall" in r]
        print(f"  {name}: " + ", ".join(loops))
    if data["external_rounds"] < args.rounds:
        print(f"essentia and openSMILE ran in the first {data['external_rounds']} round(s) only (--ext-rounds).")
    all_runs = [r for runs in data["sets"].values() for r in runs.values() if not r.get("status")]
    loads = [r["load"] for r in all_runs]
    if loads:
        print(f"1-minute load average at the end of each side: {min(loads):.1f} to {max(loads):.1f}; page cache "
              "dropped as a whole before each side: "
              + ("yes" if all(r["page_cache_dropped"] for r in all_runs) else "no (only the dataset's files)"))
    print()
    imp = data["imports_s"]
    print(f"soundstage: where the time goes (median run; process start + imports per job: {imp:.2f} s, a fresh")
    print("`python -c 'import soundstage.cli, soundstage.process, soundstage.features'`, page cache warm)")
    for name, runs in data["sets"].items():
        r = runs["soundstage"]
        b = r["breakdown"]
        shards = f"{r['shards']} shards (params: {r['n_shards_param']})"
        print(f"  {name}: {r['clips']} clips, {shards}, wall {r['wall']:.2f} s = start-up + DAG "
              f"{b['startup_dag_s']:.2f} + jobs {b['jobs_span_s']:.2f} (of which no job running "
              f"{b['no_job_running_s']:.2f}) + run end {b['end_s']:.2f}")
        rules = ", ".join(f"{rule} {d['jobs']}x{d['median_s']:.2f} s" + (f" (max {d['max_s']:.2f})" if d["jobs"] > 1
                                                                           else "")
                          for rule, d in b["rules"].items())
        print(f"    {b['n_jobs']} jobs, {b['job_sum_s']:.2f} job-s: {rules}")
        print(f"    process start + imports {b['imports_job_s']:.2f} job-s ({b['n_jobs']} x {imp:.2f}); audio work "
              f"(job time less imports) {b['audio_work_job_s']:.2f} job-s = {100 * b['audio_work_share_jobs']:.0f} % "
              f"of job time, {100 * b['audio_work_share_wall']:.0f} % of wall x 2 cores; ingest "
              f"{b['ingest_s']:.2f} s; dry run on the finished run {r.get('dry_run_s', float('nan')):.2f} s")


# ---------------------------------------------------------------------------------------------
# Driver


def add_breakdown(r: dict, imports_s: float, cores: int = 2) -> None:
    b = r["breakdown"]
    b["imports_per_job_s"] = imports_s
    b["imports_job_s"] = b["n_jobs"] * imports_s
    b["audio_work_job_s"] = max(0.0, b["job_sum_s"] - b["imports_job_s"])
    b["audio_work_share_jobs"] = b["audio_work_job_s"] / b["job_sum_s"]
    b["audio_work_share_wall"] = b["audio_work_job_s"] / (r["wall"] * cores)
    b["ingest_s"] = b["rules"].get("ingest", {}).get("sum_s", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-short", type=int, default=3000, help="0.44 s 8 kHz spoken-digit clips (default 3000)")
    ap.add_argument("--n-30s", type=int, default=100, help="30 s 22.05 kHz clips (default 100)")
    ap.add_argument("--n-long", type=int, default=4, help="long 22.05 kHz files (default 4)")
    ap.add_argument("--long-seconds", type=float, default=600.0, help="length of the long files (default 600)")
    ap.add_argument("--with-1000", action="store_true", help="also 1000 x 30 s (soundstage and references)")
    ap.add_argument("--datasets", nargs="*", default=["short", "30s", "long"], choices=["short", "30s", "long"],
                    help="datasets to run (default all three; none: the demo alone)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of every side (default 3)")
    ap.add_argument("--ext-rounds", type=int, default=1, help="rounds with essentia and openSMILE (default 1)")
    ap.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES),
                    help="which sides run (default all; e.g. --sides soundstage to compare settings)")
    ap.add_argument("--shards", type=int, help="sharding.n_shards of every project copy (default: params.yaml's)")
    ap.add_argument("--opensmile-set", default="ComParE_2016", help="openSMILE feature set (default ComParE_2016)")
    ap.add_argument("--no-demo", action="store_true", help="skip make run's pipeline on the demo")
    ap.add_argument("--demo-all-models", action="store_true",
                    help="also the demo with the default models (keras_cnn included; minutes)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 60 short, 6 x 30 s, 1 x 60 s, one round, a smaller demo with the forest")
    ap.add_argument("--work", help="working folder (default: a new temporary folder in benchmarks/.work/)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--workers", type=int, help=argparse.SUPPRESS)  # accepted from run_reference's command
    ap.add_argument("--_side", help=argparse.SUPPRESS)
    ap.add_argument("--_work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._side:
        run_external(args._side, Path(args._work), args.opensmile_set)
        return
    if args.quick:
        args.n_short, args.n_30s, args.n_long, args.long_seconds, args.rounds = 60, 6, 1, 60.0, 1
        args.with_1000 = False
        COLD.update(drop=False, settle=0.0)

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import bench_features  # noqa: F401 - one thread per numeric library, inherited by every side

    t_total = time.perf_counter()
    if args.work:
        work = Path(args.work)
    else:
        (scratch := HERE / ".work").mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="e2e-", dir=scratch))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working folder: {work}", flush=True)
    try:
        specs = dataset_specs(args)
        manifests: dict[str, list[dict]] = {}
        with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
            for i, (name, spec) in enumerate(specs.items()):
                t0 = time.perf_counter()
                manifests[name] = make_dataset(work / "datasets" / name, spec, seed=args.seed + i, pool=pool)
                print(f"dataset {name}: {spec['n']} x {spec['seconds']:g} s at {spec['sr']} Hz "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
        templates = {}
        for name in manifests:
            templates[name] = work / "projects" / f"{name}-template"
            project_template(templates[name], work / "datasets" / name, specs[name], models=["random_forest"],
                             shards=args.shards)
        ext = [k for k in EXTERNAL if installed(k)]
        missing = [k for k in EXTERNAL if k not in ext]
        if missing:
            print(f"{', '.join(SIDES[k] for k in missing)}: not installed (make bench-refs)", flush=True)
        runs: dict[str, dict[str, list[dict]]] = {name: {} for name in manifests}
        last_project: dict[str, Path] = {}
        targets: dict[str, list[str]] = {}
        for k in range(args.rounds):  # rounds side by side: drift hits every side alike
            for name, manifest in manifests.items():
                targets[name] = ["data/features/table.parquet", stats_target(templates[name])]
                for side in [s for s in ["soundstage", "reference", "fair", *(ext if k < args.ext_rounds else [])]
                             if s in args.sides]:
                    print(f"[{name}] {len(manifest)} clips, round {k + 1}/{args.rounds}: {SIDES[side]} ...", flush=True)
                    if side == "soundstage":
                        project = work / "projects" / f"{name}-{k + 1}"  # a new folder per round
                        r = run_soundstage(templates[name], project, manifest, targets=targets[name])
                        check_fold(project, targets[name][1])
                        last_project[name] = project
                    else:
                        r = run_reference(side, manifest, work / "sides" / f"{name}-{side}-{k + 1}",
                                          opensmile_set=args.opensmile_set)
                    print(f"    wall {r['wall']:.2f} s, CPU {r['cpu_s']:.2f} s", flush=True)
                    runs[name].setdefault(side, []).append(r)
        imports_s = import_time(work)
        sets = {}
        for name, by_side in runs.items():
            audio = sum(row["duration"] for row in manifests[name])
            sets[name] = {side: summarize(rs, audio) for side, rs in by_side.items()}
            for side in missing:
                sets[name][side] = {"status": "not installed (make bench-refs)"}
            ours = sets[name]["soundstage"]
            ours["clips"] = len(manifests[name])
            add_breakdown(ours, imports_s)
            ours["dry_run_s"] = dry_run(last_project[name], targets[name])
        demo = {}
        if not args.no_demo:
            variants = {"random_forest, keras_mlp": ["random_forest", "keras_mlp"]}
            if args.quick:
                variants = {"random_forest": ["random_forest"]}
            if args.demo_all_models:
                variants["default (random_forest, keras_mlp, keras_cnn)"] = ["random_forest", "keras_mlp", "keras_cnn"]
            for i, (label, models) in enumerate(variants.items()):
                print(f"[demo] models {label} ...", flush=True)
                template = work / "projects" / f"demo-template-{i}"
                project_template(template, work / "no-data", None, models=models, shards=args.shards,
                                 quick_demo=args.quick)
                r = run_soundstage(template, work / "projects" / f"demo-{i}", [], targets=None)
                r["models"] = models
                add_breakdown(r, imports_s)
                demo[label] = r
                print(f"    wall {r['wall']:.1f} s", flush=True)
        data = {"datasets": {name: {**specs[name], "clips": len(manifests[name]),
                                    "audio_s": sum(row["duration"] for row in manifests[name])}
                             for name in manifests},
                "sets": sets, "imports_s": imports_s, "demo": demo,
                "external_rounds": min(args.ext_rounds, args.rounds), "total_s": time.perf_counter() - t_total}
        for by_side in sets.values():
            for side in SIDES:
                if side in by_side and not by_side[side].get("status"):
                    _, by_side[side]["vs_seed"], by_side[side]["vs_seed_rounds"] = ratio_cells(by_side, side,
                                                                                              "reference")
                    _, by_side[side]["vs_fair"], by_side[side]["vs_fair_rounds"] = ratio_cells(by_side, side, "fair")
        print_report(data, args)
        if args.json:
            settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
            Path(args.json).write_text(json.dumps({"args": settings, **data}, indent=1))
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
