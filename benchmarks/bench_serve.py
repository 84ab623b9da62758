#!/usr/bin/env python
"""Benchmark: ``soundstage serve`` under a bounded load on 127.0.0.1.

Builds a small project outside the repository (the demo's 6 s clips at 22,050 Hz, ``--classes`` x
``--clips`` of them; the repository's feature params; a random forest) unless ``--bundle`` names a
bundle, starts ``soundstage serve BUNDLE`` as a subprocess on a free loopback port with the default
limits (``params.yaml: serve``: 2 predictions at once, 16 queued, 5 s windows every 2.5 s, so a 6 s
clip also gets its windows), and for each concurrency level sends ``--requests`` ``POST /predict``
uploads of those clips from that many client threads (one keep-alive session each). Per level it
prints throughput (requests/s), p50 and p99 latency (ms), errors (any answer but 200, or a failed
request; must be 0) and the server's RSS before and after the level (it should stay flat). Every
loop is bounded by its request count, and the server is stopped at the end. Run from the repository
root::

    nice .venv/bin/python benchmarks/bench_serve.py            # 200 requests per level, 1, 4, 16 clients
    nice .venv/bin/python benchmarks/bench_serve.py --quick    # 8 requests per level, 1 and 4 clients
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]


def build_bundle(work: Path, *, classes: int, clips: int) -> tuple[Path, list[Path]]:
    """A demo project in ``work`` trained through ``soundstage.cli.main``: (forest bundle, its clips)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from soundstage import cli

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(name="benchserve", root="data/demo")
    params["demo"].update(n_classes=classes, clips_per_class=clips, n_artists=4)
    params["sharding"]["n_shards"] = 1
    params["train"]["models"] = ["random_forest"]
    params["augment"]["enabled"] = False
    params["random_forest"]["n_estimators"] = 100
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    cwd = Path.cwd()
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    try:
        for argv in (["demo", "--out", "data/demo"], ["ingest"], ["process", "--shard", "0"],
                     ["split", "data/process/shards/000.csv"], ["features", "--index", "data/process/shards/000.csv"],
                     ["features", "--table", "--inputs", "data/features/shards/000.parquet"],
                     ["train", "--model", "random_forest", "--out-dir", "models/random_forest", "--threads", "2"]):
            if cli.main(["--params", "params.yaml", *argv]) != 0:
                raise SystemExit(f"bench_serve: soundstage {argv[0]} failed")
    finally:
        os.chdir(cwd)
    return work / "models/random_forest", sorted((work / "data/demo").rglob("*.wav"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, cwd: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "soundstage.cli", "serve", str(bundle), "--port", str(port)],
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "KERAS_BACKEND": "jax"})
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"bench_serve: the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("bench_serve: the server did not become healthy within 300 s")


def run_level(url: str, files: list[Path], *, clients: int, n_requests: int) -> dict:
    """``n_requests`` uploads of ``files`` (round robin) from ``clients`` threads: latencies and errors."""
    bodies = [(f.name, f.read_bytes()) for f in files]
    local = threading.local()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        name, body = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        try:
            r = session.post(f"{url}/predict", files={"file": (name, body)}, timeout=120)
            ok = r.status_code == 200
            problem = "" if ok else f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as exc:
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - t0
        with lock:
            (latencies.append(elapsed) if ok else errors.append(problem))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    ms = sorted(x * 1000 for x in latencies)
    pct = (lambda q: ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]) if ms else (lambda q: float("nan"))
    return {"concurrency": clients, "requests": n_requests, "wall_s": wall, "throughput_rps": len(ms) / wall,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "mean_ms": statistics.fmean(ms) if ms else float("nan"),
            "errors": len(errors), "error_examples": errors[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="serve this bundle instead of building one")
    ap.add_argument("--files", type=Path, nargs="*", help="audio files to upload (default: the built demo's clips, "
                    "or with --bundle, generated 6 s clips)")
    ap.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="client threads per level")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--clips", type=int, default=8, help="clips per class of the built demo")
    ap.add_argument("--quick", action="store_true", help="8 requests per level, levels 1 and 4")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.levels = 8, [1, 4]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=args.work))
    proc = None
    try:
        if args.bundle is None:
            t0 = time.perf_counter()
            bundle, clips = build_bundle(work, classes=args.classes, clips=args.clips)
            print(f"built a {args.classes}-class demo bundle in {time.perf_counter() - t0:.1f} s", flush=True)
        else:
            bundle, clips = args.bundle.resolve(), []
        files = args.files or clips or make_clips(work / "clips")
        serve_dir = work / "serve"  # no params.yaml there: the schema's default limits
        serve_dir.mkdir()
        proc, url = start_server(bundle, serve_dir, work / "serve.log")
        server = psutil.Process(proc.pid)
        run_level(url, files, clients=1, n_requests=2)  # the first requests of a process: not measured
        health = requests.get(f"{url}/health", timeout=10).json()
        print(f"serving {health['kind']} ({health['labels']} labels), limits {health['limits']}; "
              f"{len(files)} distinct files of {sum(f.stat().st_size for f in files) / len(files) / 1024:.0f} KiB")
        levels = []
        for clients in args.levels:
            before = server.memory_info().rss
            level = run_level(url, files, clients=clients, n_requests=args.requests)
            level.update(rss_before_mb=before / 2**20, rss_after_mb=server.memory_info().rss / 2**20)
            levels.append(level)
            print(f"  {clients:>2} clients: {level['requests']} requests in {level['wall_s']:.1f} s, "
                  f"{level['throughput_rps']:.2f} req/s, p50 {level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms, "
                  f"errors {level['errors']}, server RSS {level['rss_before_mb']:.0f} -> "
                  f"{level['rss_after_mb']:.0f} MiB", flush=True)
            for e in level["error_examples"]:
                print(f"      error: {e}")
        result = {"bundle": str(bundle), "files": len(files), "limits": health["limits"], "levels": levels,
                  "cpus": os.cpu_count()}
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        if any(level["errors"] for level in levels):
            raise SystemExit("bench_serve: some requests failed")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def make_clips(folder: Path, n: int = 8, seconds: float = 6.0, sr: int = 22050) -> list[Path]:
    """``n`` generated clips (tones over noise, a different pitch each) for a bundle given with --bundle."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for k in range(n):
        y = 0.3 * np.sin(2 * np.pi * (220 * 2 ** (k / 4)) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{k}.wav", y.astype(np.float32), sr, subtype="PCM_16")
        out.append(folder / f"clip{k}.wav")
    return out


if __name__ == "__main__":
    main()
