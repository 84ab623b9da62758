"""The storage benchmark runs as benchmarks/README.md says, and every layout reads back the same values."""

from __future__ import annotations

from pathlib import Path

from test_benchmark import quick_run


def test_store_benchmark_quick_run(tmp_path: Path) -> None:
    proc, data = quick_run("bench_store.py", tmp_path)
    assert data["same_values"] and "-> OK" in proc.stdout
    sides = data["sides"]
    assert set(sides) == {"per_clip_npy", "shard_store", "shard_arrow"}
    assert sides["per_clip_npy"]["files"] == data["clips"] and sides["shard_store"]["files"] == 8
    # The same bytes of matrices whichever way (headers aside), so the comparison is like for like.
    sizes = [s["bytes"] for s in sides.values()]
    assert max(sizes) < 1.1 * min(sizes)
    assert all(s["write_s"] > 0 and s["crops_s"] > 0 and s["whole_s"] > 0 for s in sides.values())
