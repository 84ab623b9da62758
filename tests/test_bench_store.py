"""The storage benchmark runs as benchmarks/README.md says, and every layout reads back the same values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_store_benchmark_quick_run(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_store.py"), "--quick",
                           "--work", str(tmp_path / "work"), "--json", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["same_values"] and "-> OK" in proc.stdout
    sides = data["sides"]
    assert set(sides) == {"per_clip_npy", "shard_store", "shard_arrow"}
    assert sides["per_clip_npy"]["files"] == data["clips"] and sides["shard_store"]["files"] == 8
    # The same bytes of matrices whichever way (headers aside), so the comparison is like for like.
    sizes = [s["bytes"] for s in sides.values()]
    assert max(sizes) < 1.1 * min(sizes)
    assert all(s["write_s"] > 0 and s["crops_s"] > 0 and s["whole_s"] > 0 for s in sides.values())
