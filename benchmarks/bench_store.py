#!/usr/bin/env python
"""Benchmark: where per-clip matrices live: one ``.npy`` per clip, one store per shard (soundstage.store),
or one Arrow IPC file per shard.

Writes the log-mels of ``--clips`` clips (``--frames`` frames each, varied, 128 mels, float32) in
``--shards`` shards each way, then reads them back as training does (random clips, one random crop of
``--crop`` frames each, in batches) and as evaluation does (every clip whole, in table order), each
side in a fresh process after the page cache is dropped (as root), ``--rounds`` alternating rounds.
Prints medians of write and read times, files created and bytes::

    nice .venv/bin/python benchmarks/bench_store.py                 # 20,000 clips, ~2 minutes
    nice .venv/bin/python benchmarks/bench_store.py --quick         # smoke run
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

REPO = Path(__file__).resolve().parents[1]
N_MELS = 128
SIDES = ("per_clip_npy", "shard_store", "shard_arrow")


def lengths(n: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(max(2, frames // 2), frames * 3 // 2 + 1, size=n)


def write(side: str, root: Path, n: int, frames: int, shards: int) -> dict:
    from soundstage.io import save_npy
    from soundstage.store import StoreWriter

    rng = np.random.default_rng(1)
    lens = lengths(n, frames)
    index = []
    t0 = time.perf_counter()
    for s in range(shards):
        ids = range(s, n, shards)
        if side == "per_clip_npy":
            for i in ids:
                save_npy(root / f"c{i:06d}.npy", rng.standard_normal((N_MELS, lens[i]), dtype=np.float32))
                index.append((i, "", 0, int(lens[i])))
        elif side == "shard_store":
            with StoreWriter(root / f"{s:03d}.npy", N_MELS) as w:
                for i in ids:
                    index.append((i, f"{s:03d}", w.append(rng.standard_normal((N_MELS, lens[i]), dtype=np.float32)),
                                  int(lens[i])))
        else:
            import pyarrow as pa

            schema = pa.schema([("logmel", pa.list_(pa.float32()))])
            with pa.OSFile(str(root / f"{s:03d}.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
                for row, i in enumerate(ids):
                    m = rng.standard_normal((N_MELS, lens[i]), dtype=np.float32)
                    w.write_batch(pa.record_batch([pa.array([m.T.reshape(-1)], type=pa.list_(pa.float32()))],
                                                  schema=schema))
                    index.append((i, f"{s:03d}", row, int(lens[i])))
    wall = time.perf_counter() - t0
    files = sum(1 for p in root.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in root.iterdir() if p.is_file())
    (root / "index.json").write_text(json.dumps(index))
    return {"write_s": wall, "files": files, "bytes": size}


def read(side: str, root: Path, crop: int, batch: int, batches: int) -> dict:
    from soundstage.store import Stores

    index = json.loads((root / "index.json").read_text())
    rng = np.random.default_rng(2)
    if side == "shard_arrow":
        import pyarrow as pa

        readers = {}

        def matrix(store: str, row: int, frames: int) -> np.ndarray:
            if store not in readers:
                readers[store] = pa.ipc.open_file(pa.memory_map(str(root / f"{store}.arrow")))
            values = readers[store].get_batch(row).column(0).values.to_numpy(zero_copy_only=True)
            return values.reshape(frames, N_MELS).T
    elif side == "shard_store":
        stores = Stores(root)

        def matrix(store: str, offset: int, frames: int) -> np.ndarray:
            return stores.matrix(store, offset, frames)
    else:
        def matrix(store: str, offset: int, frames: int, i: int = 0) -> np.ndarray:
            return np.load(root / f"c{i:06d}.npy", mmap_mode="r")

    def get(entry) -> np.ndarray:
        i, store, offset, frames = entry
        return matrix(store, offset, frames, i) if side == "per_clip_npy" else matrix(store, offset, frames)

    t0 = time.perf_counter()
    total = 0.0
    for _ in range(batches):  # training: random clips, one random crop each
        for k in rng.integers(0, len(index), size=batch):
            m = get(index[k])
            start = int(rng.integers(0, max(1, m.shape[1] - crop + 1)))
            total += float(np.asarray(m[:, start:start + crop]).sum())
    crops = time.perf_counter() - t0
    t0 = time.perf_counter()
    for entry in index:  # evaluation: every clip, whole, in table order
        total += float(np.asarray(get(entry))[:, :1].sum())
    whole = time.perf_counter() - t0
    return {"crops_s": crops, "whole_s": whole, "checksum": total}


def drop_page_cache() -> None:
    if os.geteuid() == 0:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def child(args: argparse.Namespace) -> None:
    print(json.dumps(read(args.side, args.root, args.crop, args.batch, args.batches)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=20_000)
    ap.add_argument("--frames", type=int, default=44, help="mean frames per clip (44: ~1 s at 22.05 kHz, hop 512)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="500 clips, one round")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", choices=SIDES, dest="side", help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)
    if args.quick:
        args.clips, args.rounds, args.batches = 500, 1, 10
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="store-", dir=args.work))
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    try:
        for r in range(args.rounds):
            for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                root = work / f"{side}-{r}"
                root.mkdir()
                drop_page_cache()
                w = write(side, root, args.clips, args.frames, args.shards)
                drop_page_cache()
                out = subprocess.run([sys.executable, __file__, "--child", side, "--root", str(root),
                                      "--crop", str(args.crop), "--batch", str(args.batch),
                                      "--batches", str(args.batches)], capture_output=True, text=True, check=True)
                runs[side].append({**w, **json.loads(out.stdout)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks = {side: {round(r["checksum"], 1) for r in rs} for side, rs in runs.items()}
    same = len({frozenset(c) for c in checks.values()}) == 1
    print(f"{args.clips} clips x ~{args.frames} frames x {N_MELS} mels in {args.shards} shards, "
          f"{args.rounds} round(s), page cache dropped: {'yes' if os.geteuid() == 0 else 'no (not root)'}")
    print(f"{'side':14s} {'files':>7s} {'MB':>7s} {'write s':>8s} {'crops s':>8s} {'whole s':>8s}")
    report = {"clips": args.clips, "sides": {}, "same_values": same}
    for side, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("write_s", "crops_s", "whole_s")}
        report["sides"][side] = {**med, "files": rs[0]["files"], "bytes": rs[0]["bytes"]}
        print(f"{side:14s} {rs[0]['files']:7d} {rs[0]['bytes'] / 1e6:7.1f} {med['write_s']:8.2f} "
              f"{med['crops_s']:8.2f} {med['whole_s']:8.2f}")
    print("values read back: " + ("the same on every side -> OK" if same else "MISMATCH"))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
