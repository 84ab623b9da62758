#!/usr/bin/env python
"""Benchmark: soundstage's raw -> features + stats path against two librosa references.

Both sides get the same dataset, built here: 44.1 kHz stereo 16-bit WAV files (tones, harmonics,
noise), so decoding and resampling to 22.05 kHz are part of every path; ``--n-long`` clips of
``--long-seconds`` (30 s) and ``--n-short`` sub-second clips (0.25-0.95 s), each set timed on its
own. For every set, ``--repeat`` rounds (5 by default) of the three sides below, each side in a
fresh process after ``sync`` with the dataset's files dropped from the page cache (and, where
allowed, the whole page cache), so every side reads the dataset from disk as a first run does.
The run with the median wall time of each side is reported, with every run's wall time and the
per-round speed-ups. Each soundstage run writes to a folder of its own, and no output is deleted
until the end (benchmarks/README.md says why):

seed-style reference
    The seeds' way, serial in one process: ``librosa.load(sr=22050)``, then one librosa call per
    feature on the signal, each recomputing the STFT (melspectrogram -> log-mel, mfcc + delta +
    delta-delta, chroma_stft estimating the tuning, spectral centroid / bandwidth / rolloff /
    contrast / flatness, rms, zcr), a mean/std summary row per clip, every log-mel kept in
    memory, and the CMVN statistics of the train clips from ``np.concatenate`` of their log-mels.
fair reference
    The same, but as librosa is meant to be used: one STFT per clip, its magnitude or power passed
    as ``S=`` to every feature (mfcc from the log-mel, chroma with ``tuning=0.0`` as soundstage's
    default, rms from the magnitude as soundstage computes it).
soundstage
    The real stage functions over ``--shards`` shards in a pool of ``--workers`` processes
    (spawn; each set up as ``soundstage <stage>`` sets itself up, ``soundstage.worker.setup``: one
    BLAS/OpenMP/numba thread, glibc keeping freed memory; imports and JIT paid once per worker,
    before the clock starts): ``process_shard`` (decode,
    soxr HQ resample, mono; trim and normalization off, as ``librosa.load`` does neither) writing
    the shard's float32 audio store and index, then ``features_shard`` writing the ``logmel``/``mfcc``
    stores (one ``.npy`` per shard) and the shard Parquet table, then ``train_moments`` merging the train clips' moments
    (one shard table at a time) into ``logmel.npz``.

Reported per side: wall and CPU time of the timed work, x realtime per core (audio seconds /
(wall x cores used)) and per CPU-second (robust to other load on a shared machine), the speed-up
against each reference (reference wall / soundstage wall), peak RSS (largest single process;
sums of RSS and PSS over the process tree, sampled every 0.2 s), soundstage's cost per stage,
features alone on in-memory signals, and the numeric identity of the CMVN results. Imports, pool
start-up and warm-up happen before the clock starts on every side. Then soundstage alone on a
dataset ``--scale`` times larger (hard links to the same files under new ids, so the statistics
must come out the same) shows that its memory does not grow with the dataset.

Run from the repository root, on otherwise idle cores for the wall-clock figures::

    nice .venv/bin/python benchmarks/bench_features.py            # defaults: ~10 minutes on 2 cores
    nice .venv/bin/python benchmarks/bench_features.py --quick    # smoke run, ~30 s

The dataset and all outputs live in a temporary folder (``--work``; by default under
``benchmarks/.work/``, on the disk the pipeline writes to), removed at the end unless ``--keep``:
about 12 GB with the defaults. ``--json FILE`` also writes every number.
"""

from __future__ import annotations

import os

from soundstage.worker import THREAD_VARS

# Before numpy loads, in this process and (inherited) in every process it starts: one thread per
# library on both sides (the reference is serial by definition).
for _var in THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

RAW_SR = 44100
TARGET_SR = 22050
N_FFT, HOP, N_MELS, N_MFCC = 2048, 512, 128, 20
LABELS = ("tonal", "bright", "noisy", "low")
TRAIN_FRACTION = 7  # of 10: a clip is in train when crc32(id) % 10 < 7, on both sides


# ---------------------------------------------------------------------------------------------
# Dataset


def synth(seed: int, seconds: float, label: str) -> np.ndarray:
    """A stereo clip ``(n, 2)`` float32 in [-1, 1]: harmonic tones with vibrato, beats and noise."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * RAW_SR))
    t = np.arange(n, dtype=np.float64) / RAW_SR
    f0 = {"tonal": 220.0, "bright": 660.0, "noisy": 330.0, "low": 80.0}[label] * rng.uniform(0.7, 1.4)
    phase = 2 * np.pi * f0 * t + 0.02 * f0 / 5.0 * np.sin(2 * np.pi * 5.0 * t)  # 5 Hz vibrato
    y = np.zeros(n)
    for h, amp in enumerate(rng.uniform(0.1, 1.0, size=4) / np.arange(1, 5) ** (0.5 if label == "bright" else 1.5)):
        y += amp * np.sin((h + 1) * phase + rng.uniform(0, 2 * np.pi))
    beat = 0.5 + 0.5 * (np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * t) > 0)  # on/off pulses
    noise_level = {"noisy": 0.5, "bright": 0.1}.get(label, 0.03)
    y = y * beat + noise_level * rng.standard_normal(n)
    y /= np.max(np.abs(y)) * rng.uniform(1.2, 2.0)
    side = 0.05 * rng.standard_normal(n)
    return np.stack([y + side, y - side], axis=1).astype(np.float32)


def _write_clip(job: tuple[str, int, float, str]) -> float:
    import soundfile as sf

    path, seed, seconds, label = job
    y = synth(seed, seconds, label)
    sf.write(path, y, RAW_SR, subtype="PCM_16", format="WAV")
    return len(y) / RAW_SR


def make_dataset(root: Path, *, kind: str, n: int, long_seconds: float, seed: int, pool) -> list[dict]:
    """Write ``n`` clips under ``root/raw/<label>/`` and return manifest rows."""
    rng = np.random.default_rng(seed)
    jobs, rows = [], []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        seconds = long_seconds if kind == "long" else float(rng.uniform(0.25, 0.95))
        clip_id = f"{label}/{kind}.{i:05d}"
        path = root / "raw" / f"{clip_id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((str(path), seed * 100_003 + i, seconds, label))
        rows.append({"id": clip_id, "path": str(path), "label": label, "group": clip_id})
    for row, duration in zip(rows, pool.map(_write_clip, jobs, chunksize=8), strict=True):
        row["duration"] = duration
    return rows


def replicate(rows: list[dict], root: Path, scale: int) -> list[dict]:
    """``scale`` copies of every clip under new ids, as hard links (no new disk, no new synthesis)."""
    out = []
    for k in range(scale):
        for row in rows:
            clip_id = f"{row['id']}_r{k}"
            path = root / "raw" / f"{clip_id}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(row["path"], path)
            except OSError:
                shutil.copy2(row["path"], path)
            out.append({**row, "id": clip_id, "path": str(path), "group": clip_id})
    return out


def is_train(clip_id: str) -> bool:
    """The split both sides use; a replica (``<id>_r<k>``) goes where its original goes."""
    base = clip_id.rsplit("_r", 1)[0] if "_r" in clip_id else clip_id
    return zlib.crc32(base.encode("utf-8")) % 10 < TRAIN_FRACTION


# ---------------------------------------------------------------------------------------------
# Memory


def _tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    try:
        import psutil

        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except ImportError:
        pass
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = [pid], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.extend(kids)
        frontier.extend(kids)
    return tree


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of one process, from /proc; (0, 0) once it is gone.

    PSS (proportional set size) shares each shared page among the processes that map it, so the
    PSS of a process tree adds up to the memory it really holds, where summing RSS counts the
    shared libraries of every worker again.
    """
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return rss, pss


class TreeSampler:
    """Peak resident memory (sums of RSS and of PSS) of this process tree, sampled in a thread.

    Every ``interval`` seconds; the list of processes is refreshed every ``refresh`` seconds
    (finding the children scans ``/proc``) and at the end. ``cpu`` is the CPU time the sampling
    itself took (reading ``smaps_rollup`` walks page tables), subtracted from the measured side's
    CPU time. Its wall-clock cost cannot be subtracted: on the soundstage side, whose workers
    use both cores, it takes ~1 % of a core from them (on the serial reference side it runs on
    the idle core), so the sampling is kept sparse.
    """

    def __init__(self, interval: float = 0.2, refresh: float = 1.0) -> None:
        self.interval, self.refresh, self.rss, self.pss, self.cpu = interval, refresh, 0, 0, 0.0
        self._pids: list[int] = []
        self._listed = -float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self, *, relist: bool = False) -> None:
        if relist or time.monotonic() - self._listed >= self.refresh:
            self._pids, self._listed = _tree_pids(os.getpid()), time.monotonic()
        per = [_memory(p) for p in self._pids]
        self.rss = max(self.rss, sum(r for r, _ in per))
        self.pss = max(self.pss, sum(p for _, p in per))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self.cpu = time.thread_time()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(relist=True)


def maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


# ---------------------------------------------------------------------------------------------
# Reference side (runs in its own process)


def reference_clip(path: str, *, fair: bool = False) -> tuple[np.ndarray, dict[str, float], float]:
    """One clip: its log-mel ``(N_MELS, t)`` in dB, its summary row and its length in seconds.

    ``fair=False``: every feature from the signal (each call computes its own STFT, chroma
    estimates the tuning); ``fair=True``: one STFT, its magnitude or power passed as ``S=``.
    """
    import librosa

    y, sr = librosa.load(path, sr=TARGET_SR)
    kw = dict(n_fft=N_FFT, hop_length=HOP)
    if fair:
        mag = np.abs(librosa.stft(y, **kw))  # (1 + N_FFT // 2, t)
        power = mag**2
        logmel = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr, n_mels=N_MELS, **kw), ref=1.0)
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=N_MFCC)
        feats = {
            "chroma": librosa.feature.chroma_stft(S=power, sr=sr, tuning=0.0, **kw),
            "centroid": librosa.feature.spectral_centroid(S=mag, sr=sr, **kw),
            "bandwidth": librosa.feature.spectral_bandwidth(S=mag, sr=sr, **kw),
            "rolloff": librosa.feature.spectral_rolloff(S=mag, sr=sr, **kw),
            "contrast": librosa.feature.spectral_contrast(S=mag, sr=sr, **kw),
            "flatness": librosa.feature.spectral_flatness(S=mag, **kw),
            "rms": librosa.feature.rms(S=mag, frame_length=N_FFT, hop_length=HOP),
        }
    else:
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=N_MELS, **kw)
        logmel = librosa.power_to_db(mel, ref=1.0)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC, n_mels=N_MELS, **kw)
        feats = {
            "chroma": librosa.feature.chroma_stft(y=y, sr=sr, **kw),
            "centroid": librosa.feature.spectral_centroid(y=y, sr=sr, **kw),
            "bandwidth": librosa.feature.spectral_bandwidth(y=y, sr=sr, **kw),
            "rolloff": librosa.feature.spectral_rolloff(y=y, sr=sr, **kw),
            "contrast": librosa.feature.spectral_contrast(y=y, sr=sr, **kw),
            "flatness": librosa.feature.spectral_flatness(y=y, **kw),
            "rms": librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP),
        }
    mode = "interp" if mfcc.shape[1] >= 9 else "nearest"
    feats["mfcc"] = np.concatenate([mfcc, librosa.feature.delta(mfcc, mode=mode),
                                    librosa.feature.delta(mfcc, order=2, mode=mode)])
    feats["zcr"] = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP)
    summary = {}
    for name, x in feats.items():
        for stat, values in (("mean", x.mean(axis=1)), ("std", x.std(axis=1))):
            summary.update({f"{name}_{stat}_{i:02d}": float(v) for i, v in enumerate(values)})
    return logmel, summary, len(y) / sr


def run_reference(manifest: list[dict], work: Path, *, fair: bool) -> dict:
    import warnings

    import librosa  # noqa: F401 - imports are not part of the timing, on either side

    warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large")
    warm = work / "warm.wav"
    _write_clip((str(warm), 1, 1.0, "tonal"))
    reference_clip(str(warm), fair=fair)  # lazy imports and numba JIT, as soundstage's workers pay theirs
    with TreeSampler() as sampler:
        t0, c0, s0 = time.perf_counter(), time.process_time(), sampler.cpu
        logmels, rows, audio = {}, [], 0.0
        for row in manifest:
            logmel, summary, seconds = reference_clip(row["path"], fair=fair)
            logmels[row["id"]] = logmel
            rows.append(summary)
            audio += seconds
        train = [logmels[i] for i in sorted(logmels) if is_train(i)]
        x = np.concatenate(train, axis=1).astype(np.float64)  # every train frame in memory
        mean, std = x.mean(axis=1), x.std(axis=1)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0 - (sampler.cpu - s0)
    return {"wall": wall, "cpu_s": cpu, "audio_s": audio, "clips": len(manifest), "cores": 1, "count": int(x.shape[1]),
            "mean": mean.tolist(), "std": std.tolist(), "rss_max_proc_mb": maxrss_mb(),
            "rss_tree_mb": sampler.rss / 2**20, "pss_tree_mb": sampler.pss / 2**20}


# ---------------------------------------------------------------------------------------------
# soundstage side (runs in its own process, with a pool of workers)


def _process_config():
    from soundstage.dsp import DurationConfig, NormalizeConfig, ProcessConfig, TrimConfig

    # librosa.load(sr=22050) = decode, mono, soxr HQ; no trimming, no normalization.
    return ProcessConfig(sample_rate=TARGET_SR, mono=True, trim=TrimConfig(enabled=False),
                         normalize=NormalizeConfig(enabled=False), duration=DurationConfig(mode="none"))


def _feature_config():
    from soundstage.features_core import FeatureConfig

    return FeatureConfig(n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, n_mfcc=N_MFCC)


def init_worker() -> None:
    """Set the process up as ``soundstage <stage>`` does (``soundstage.worker.setup``: threads
    pinned, heap kept), import, warm up."""
    from soundstage import worker

    worker.setup()
    import pandas as pd

    import soundstage.features  # noqa: F401
    import soundstage.process  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        path = Path(tmp) / "warm.wav"
        _write_clip((str(path), 2, 1.0, "tonal"))
        manifest = pd.DataFrame([{"id": "warm", "path": str(path), "label": "x", "group": "g", "shard": 0}])
        run_shard(0, manifest, Path(tmp))


def ping(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def run_shard(shard: int, manifest, root: Path) -> dict:
    """One shard through ``process`` then ``features``, writing what the CLI writes."""
    from soundstage.features import features_shard, write_table
    from soundstage.io import read_csv, write_csv
    from soundstage.process import process_shard

    name = f"{shard:03d}"
    c0, t0 = time.process_time(), time.perf_counter()
    index, rejected = process_shard(manifest=manifest, out_dir=root / "process", config=_process_config(),
                                    shard=shard, relative_to=root)
    write_csv(root / "process" / "shards" / f"{name}.rejected.csv", rejected)
    write_csv(root / "process" / "shards" / f"{name}.csv", index)
    c1, t1 = time.process_time(), time.perf_counter()
    table, frejected = features_shard(index=read_csv(root / "process" / "shards" / f"{name}.csv"),
                                      audio_dir=root / "process" / "audio", out_dir=root / "features",
                                      config=_feature_config(), save=("logmel", "mfcc"), shard=shard)
    write_csv(root / "features" / "shards" / f"{name}.rejected.csv", frejected)
    write_table(root / "features" / "shards" / f"{name}.parquet", table)
    c2, t2 = time.process_time(), time.perf_counter()
    return {"shard": shard, "process_s": t1 - t0, "features_s": t2 - t1, "process_cpu_s": c1 - c0,
            "features_cpu_s": c2 - c1, "cpu_s": c2 - c0, "clips": len(table),
            "rejected": len(rejected) + len(frejected), "audio_s": float(index["duration"].sum()),
            "worker_rss_mb": maxrss_mb(), "pid": os.getpid()}


def features_only(index_csv: Path, root: Path, n: int) -> dict:
    """CPU time of ``clip_features`` + log-mel moments on signals already in memory (no decode, no I/O),
    for the first ``n`` clips of a process-shard index."""
    from soundstage.features import clip_features
    from soundstage.io import read_csv
    from soundstage.moments import Moments
    from soundstage.process import read_segment
    from soundstage.store import Stores

    rows = read_csv(index_csv).head(n).to_dict("records")
    stores = Stores(root / "process" / "audio")
    cfg = _feature_config()
    times, audio = [], 0.0
    for row in rows:
        y = read_segment(stores, row)  # one clip in memory at a time; reading is not timed
        t0 = time.process_time()
        feats, _ = clip_features(y, sr=TARGET_SR, config=cfg)
        Moments.from_frames(feats["logmel"])
        times.append(time.process_time() - t0)
        audio += len(y) / TARGET_SR
    return {"clips": len(rows), "audio_s": audio, "cpu_s": sum(times), "median_ms": 1000 * float(np.median(times))}


def run_soundstage(manifest: list[dict], work: Path, *, workers: int, shards: int, features_probe: int) -> dict:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import pandas as pd
    import pyarrow.dataset  # noqa: F401 - imported before the clock (pd.read_parquet's reader), as every other import

    from soundstage.io import save_npz
    from soundstage.stats import read_moments, train_moments

    frame = pd.DataFrame(manifest)
    frame["shard"] = [zlib.crc32(i.encode("utf-8")) % shards for i in frame["id"]]
    parts = [(k, frame[frame["shard"] == k]) for k in range(shards)]
    parts = [(k, rows) for k, rows in parts if len(rows)]

    with TreeSampler() as sampler:
        t_start = time.perf_counter()
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=init_worker)
        seen: set[int] = set()
        while len(seen) < workers:  # every worker started, imported and warmed up
            seen.update(pool.map(ping, range(workers)))
        startup = time.perf_counter() - t_start
        sampler.sample(relist=True)  # the workers, from now on

        t0, c0, s0 = time.perf_counter(), time.process_time(), sampler.cpu
        futures = [pool.submit(run_shard, k, rows, work) for k, rows in parts]
        results = [f.result() for f in futures]
        t_shards = time.perf_counter()
        shard_files = [work / "features" / "shards" / f"{k:03d}.parquet" for k, _ in parts]
        train_ids = {i for i in frame["id"] if is_train(i)}
        m = train_moments(shard_tables=(read_moments(f) for f in shard_files),
                          train_ids=train_ids)
        save_npz(work / "stats" / "logmel.npz", mean=m.mean, std=m.std, count=np.asarray(m.count))
        wall, main_cpu = time.perf_counter() - t0, time.process_time() - c0 - (sampler.cpu - s0)

        probe = None
        if features_probe:
            index_csv = work / "process" / "shards" / f"{parts[0][0]:03d}.csv"
            probe = pool.submit(features_only, index_csv, work, features_probe).result()
        pool.shutdown()
    return {"wall": wall, "cpu_s": main_cpu + sum(r["cpu_s"] for r in results), "startup": startup,
            "stats_wall_s": wall - (t_shards - t0),
            "audio_s": sum(r["audio_s"] for r in results),
            "clips": sum(r["clips"] for r in results), "rejected": sum(r["rejected"] for r in results),
            "cores": workers, "shards": len(parts), "count": m.count, "mean": m.mean.tolist(), "std": m.std.tolist(),
            "process_wall_s": sum(r["process_s"] for r in results),
            "features_wall_s": sum(r["features_s"] for r in results),
            "process_cpu_s": sum(r["process_cpu_s"] for r in results),
            "features_cpu_s": sum(r["features_cpu_s"] for r in results),
            "worker_rss_mb": max(r["worker_rss_mb"] for r in results), "main_rss_mb": maxrss_mb(),
            "rss_max_proc_mb": max(maxrss_mb(), maxrss_mb(resource.RUSAGE_CHILDREN)),
            "rss_tree_mb": sampler.rss / 2**20, "pss_tree_mb": sampler.pss / 2**20, "features_only": probe}


# ---------------------------------------------------------------------------------------------
# Driver


def side(kind: str, manifest: list[dict], work: Path, args: argparse.Namespace, *, probe: int = 0) -> dict:
    """Run one side in a fresh Python process, so that its memory and imports are its own."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "manifest.json").write_text(json.dumps(manifest))
    os.sync()  # the previous run's written data goes to disk now, not during this run
    evict(row["path"] for row in manifest)  # both sides read the dataset from disk, as a first run does
    dropped = drop_page_cache()
    time.sleep(1.0)
    cmd = [sys.executable, __file__, "--_side", kind, "--_work", str(work), "--workers", str(args.workers),
           "--shards", str(args.shards), "--_probe", str(probe)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} side failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    # The 1-minute load average around the run: above ~0 before a run, other work shares the cores.
    return {**json.loads((work / "result.json").read_text()), "load": (load_before, os.getloadavg()[0]),
            "page_cache_dropped": dropped}


def evict(paths) -> None:
    """Drop the files' (clean) pages from the page cache: ``posix_fadvise(POSIX_FADV_DONTNEED)``.

    Without this, a side would find the files the side before it just read still cached.
    No-op where ``posix_fadvise`` is missing.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def drop_page_cache() -> bool:
    """Drop the clean page cache as a whole (``/proc/sys/vm/drop_caches``, root only; call after
    ``sync``), so that no side inherits cached metadata of the work before it (see
    benchmarks/README.md). False where not allowed."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the lower middle one for an even count), with every
    run's wall and CPU time attached (``walls``, ``cpus``)."""
    ordered = sorted(runs, key=lambda r: r["wall"])
    probe = next((r["features_only"] for r in runs if r.get("features_only")), None)  # measured in run 1
    return {**ordered[(len(ordered) - 1) // 2], "walls": [r["wall"] for r in runs], "cpus": [r["cpu_s"] for r in runs],
            **({"features_only": probe} if probe else {})}


def _child(args: argparse.Namespace) -> None:
    work = Path(args._work)
    manifest = json.loads((work / "manifest.json").read_text())
    if args._side in REFERENCES:
        result = run_reference(manifest, work, fair=args._side == "fair")
    else:
        result = run_soundstage(manifest, work, workers=args.workers, shards=args.shards, features_probe=args._probe)
    (work / "result.json").write_text(json.dumps(result))


def identity(ref: dict, ours: dict) -> dict:
    mean_a, mean_b = np.asarray(ref["mean"]), np.asarray(ours["mean"])
    std_a, std_b = np.asarray(ref["std"]), np.asarray(ours["std"])
    return {"count_equal": ref["count"] == ours["count"], "mean_max_abs_db": float(np.max(np.abs(mean_a - mean_b))),
            "std_max_rel": float(np.max(np.abs(std_a - std_b) / std_a))}


def xrt(r: dict) -> float:
    return r["audio_s"] / (r["wall"] * r["cores"])


#: The reference sides, as named in the report and the JSON output.
REFERENCES = {"reference": "seed-style", "fair": "fair ref."}
SIDES = (*REFERENCES, "soundstage")


def print_report(sets: dict, scaled: dict, args: argparse.Namespace, total_s: float) -> None:
    line = "-" * 141
    print()
    print(f"soundstage features + stats benchmark  ({os.cpu_count()} CPUs; soundstage: {args.workers} workers, "
          f"{args.shards} shards; references: 1 process)")
    print(line)
    print(f"{'clips':<14}{'side':<12}{'n':>6}{'audio s':>9}{'wall s':>8}{'CPU s':>8}{'xRT/core':>10}{'xRT/CPU-s':>11}"
          f"{'vs seed-style':>15}{'vs fair ref.':>14}{'RSS proc MB':>13}{'RSS sum MB':>12}{'PSS sum MB':>12}")
    print(line)

    def row(name: str, label: str, r: dict, *ratios: str) -> None:
        cells = (list(ratios) + ["", ""])[:2]
        print(f"{name:<14}{label:<12}{r['clips']:>6}{r['audio_s']:>9.0f}{r['wall']:>8.2f}{r['cpu_s']:>8.2f}"
              f"{xrt(r):>10.0f}{r['audio_s'] / r['cpu_s']:>11.0f}{cells[0]:>15}{cells[1]:>14}"
              f"{r['rss_max_proc_mb']:>13.0f}{r['rss_tree_mb']:>12.0f}{r['pss_tree_mb']:>12.0f}")

    for name, runs in sets.items():
        ours = runs["soundstage"]
        row(name, "seed-style", runs["reference"], "1.0x")
        row(name, "fair ref.", runs["fair"], f"{runs['reference']['wall'] / runs['fair']['wall']:.1f}x", "1.0x")
        row(name, "soundstage", ours, *(f"{runs[k]['wall'] / ours['wall']:.1f}x" for k in REFERENCES))
    for name, r in scaled.items():
        row(name, "soundstage", r)
    print(line)
    for name, runs in sets.items():
        walls = "; ".join(f"{REFERENCES.get(k, k)} {', '.join(f'{w:.2f}' for w in runs[k]['walls'])}" for k in SIDES)
        print(f"{name}: {len(runs['soundstage']['walls'])} runs each, wall s: {walls} (medians above)")
        for k in REFERENCES:
            pairs = zip(runs[k]["walls"], runs["soundstage"]["walls"], strict=True)
            print(f"  speed-up vs {REFERENCES[k]} per round: {', '.join(f'{a / b:.1f}x' for a, b in pairs)}")
    print("xRT/core = audio s / (wall s x cores used); xRT/CPU-s = audio s / CPU s actually used (robust to other")
    print("load on the machine); vs X = X's wall / this side's wall (medians); RSS proc = largest single process")
    print("(ru_maxrss); RSS sum / PSS sum = peak over time of the sum over the side's processes (sampled every 0.2 s;")
    print("PSS counts shared library pages once). Start-up (imports, pool, warm-up) is outside wall and CPU "
          "on every side.")
    runs_all = [r for runs in sets.values() for r in runs.values()] + list(scaled.values())
    low = min(min(r["load"]) for r in runs_all)
    high = max(max(r["load"]) for r in runs_all)
    print(f"1-minute load average around the runs: {low:.1f} to {high:.1f} "
          "(this benchmark alone: ~1 for a reference, ~2 for soundstage; more means shared cores)")
    print("page cache dropped as a whole before each side: "
          + ("yes" if all(r["page_cache_dropped"] for r in runs_all) else "no (not allowed: only the dataset's files)"))
    print()
    print("soundstage details")
    for name, ours in {**{k: v["soundstage"] for k, v in sets.items()}, **scaled}.items():
        a = ours["audio_s"]
        parts = [f"process stage {a / ours['process_cpu_s']:.0f}x RT per CPU-s ({a / ours['process_wall_s']:.0f}x "
                 "per worker-wall-s)",
                 f"features stage {a / ours['features_cpu_s']:.0f}x RT per CPU-s ({a / ours['features_wall_s']:.0f}x "
                 "per worker-wall-s)",
                 f"stats merge {ours['stats_wall_s'] * 1000:.0f} ms wall",
                 f"pool start-up {ours['startup']:.1f} s (not in wall)",
                 f"worker peak {ours['worker_rss_mb']:.0f} MB, main {ours['main_rss_mb']:.0f} MB"]
        if ours.get("features_only"):
            fo = ours["features_only"]
            parts.append(f"features alone (signals in memory, no decode or I/O) {fo['audio_s'] / fo['cpu_s']:.0f}x "
                         f"RT per core, {fo['median_ms']:.1f} ms/clip")
        if ours["rejected"]:
            parts.append(f"REJECTED {ours['rejected']}")
        print(f"  {name}:\n    " + "\n    ".join(parts))
    print()
    print("numeric identity of the train log-mel CMVN (each reference's np.concatenate vs soundstage's merged moments)")
    for name, runs in sets.items():
        ours = runs["soundstage"]
        for k in REFERENCES:
            ref = runs[k]
            d = identity(ref, ours)
            ok = d["count_equal"] and d["mean_max_abs_db"] < 1e-3 and d["std_max_rel"] < 1e-5
            print(f"  {name}, {REFERENCES[k]}: frames {ref['count']} vs {ours['count']}, max |mean diff| "
                  f"{d['mean_max_abs_db']:.2e} dB, max std rel diff {d['std_max_rel']:.2e}  -> "
                  f"{'OK' if ok else 'MISMATCH'} (tolerance 1e-3 dB, 1e-5 rel)")
    for name, r in scaled.items():
        base = sets[name.split(" x")[0]]["soundstage"]
        same = np.allclose(r["mean"], base["mean"], rtol=0, atol=1e-9) and np.allclose(r["std"], base["std"], rtol=1e-9)
        print(f"  {name}: {r['count']} frames = {args.scale} x {base['count']}; statistics equal to the 1x run: "
              f"{'yes' if same else 'NO'}")
    print()
    print("targets: soundstage >= 10x the seed-style reference end to end (both clip lengths); features >= 500x")
    print("realtime per core on 30 s clips; peak RSS <= 500 MB at 1x and 10x.")
    print(f"total benchmark time {total_s:.0f} s (dataset synthesis included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-long", type=int, default=200, help="30 s clips (default 200)")
    ap.add_argument("--n-short", type=int, default=400, help="sub-second clips, 0.25-0.95 s (default 400)")
    ap.add_argument("--long-seconds", type=float, default=30.0, help="length of the long clips (default 30)")
    ap.add_argument("--scale", type=int, default=10,
                    help="soundstage alone on a dataset this many times larger (default 10; 1 skips it)")
    ap.add_argument("--workers", type=int, default=2, help="soundstage worker processes (default 2)")
    ap.add_argument("--shards", type=int, default=8, help="shards (default 8, as params.yaml)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=5,
                    help="rounds of the three sides on each 1x dataset; medians reported (default 5)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 6 long and 24 short clips, scale 3, 1 round")
    ap.add_argument("--work", help="working folder (default: a new temporary folder in benchmarks/.work/)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--_side", help=argparse.SUPPRESS)
    ap.add_argument("--_work", help=argparse.SUPPRESS)
    ap.add_argument("--_probe", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._side:
        _child(args)
        return
    if args.quick:
        args.n_long, args.n_short, args.scale, args.repeat = 6, 24, 3, 1

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    t_total = time.perf_counter()
    if args.work:
        work = Path(args.work)
    else:
        (scratch := Path(__file__).resolve().parent / ".work").mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="soundstage-bench-", dir=scratch))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working folder: {work}", flush=True)
    try:
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn")) as pool:
            data = {
                f"{args.long_seconds:g} s": ("long", make_dataset(
                    work / "long", kind="long", n=args.n_long, long_seconds=args.long_seconds, seed=args.seed,
                    pool=pool)),
                "0.25-0.95 s": ("short", make_dataset(
                    work / "short", kind="short", n=args.n_short, long_seconds=args.long_seconds,
                    seed=args.seed + 1, pool=pool)),
            }
        sets, scaled = {}, {}
        for name, (tag, manifest) in data.items():
            if not manifest:
                continue
            runs: dict[str, list[dict]] = {k: [] for k in SIDES}
            for k in range(args.repeat):  # rounds side by side; the medians are reported
                for kind in SIDES:
                    print(f"[{name}] {len(manifest)} clips, round {k + 1}/{args.repeat}: {kind} ...", flush=True)
                    # A new folder per soundstage run, deleted only at the end (benchmarks/README.md).
                    folder = work / (f"{tag}-soundstage-{k + 1}" if kind == "soundstage" else f"{tag}-{kind}")
                    runs[kind].append(side(kind, manifest, folder, args,
                                           probe=20 if kind == "soundstage" and k == 0 else 0))
            sets[name] = {kind: median_run(r) for kind, r in runs.items()}
        for name, (tag, manifest) in data.items():  # the larger datasets after every 1x round
            if manifest and args.scale > 1:
                print(f"[{name} x{args.scale}] soundstage ...", flush=True)
                big = replicate(manifest, work / f"{tag}-x{args.scale}", args.scale)
                out = work / f"{tag}-x{args.scale}-soundstage"
                scaled[f"{name} x{args.scale}"] = side("soundstage", big, out, args)
        print_report(sets, scaled, args, time.perf_counter() - t_total)
        if args.json:
            settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
            Path(args.json).write_text(json.dumps({"args": settings, "sets": sets, "scaled": scaled}, indent=1))
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
