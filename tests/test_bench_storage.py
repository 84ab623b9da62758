"""``benchmarks/bench_storage.py --quick`` runs and reports every figure at both sizes (no time is asserted:
the figures are measured on idle cores, see benchmarks/)."""

from __future__ import annotations

import pytest
from test_benchmark import quick_run

FIGURES = ("wall_s", "onsuccess_s", "peak_rss_mb")
TIMES = ("noop_s", "status_s", "commit_s", "push_s")
COUNTS = ("dvc_tracked_files", "cache_objects", "remote_objects", "data_files", "shards")


@pytest.mark.slow
def test_bench_storage_quick_run_reports_each_size(tmp_path):
    proc, data = quick_run("bench_storage.py", tmp_path)
    assert data["sizes"] == [60, 240]
    results = data["results"]
    assert set(results) == {"60", "240"}
    for size, r in results.items():
        assert r["clips"] == int(size)
        assert all(r["full"][k] > 0 for k in FIGURES), (size, r["full"])
        assert all(r[k] > 0 for k in TIMES + COUNTS), size
        assert r["full"]["onsuccess_s"] < r["full"]["wall_s"], size
        assert r["noop_nothing_to_do"] and len(r["walls"]["noop"]) == 1, size
        assert r["status_clean"], size  # the run's own dvc commit left DVC with nothing to do
        assert r["cache_objects"] >= r["remote_objects"] > 0, size  # the push sent what the cache holds
    # Files grow with the shards, not the clips: 4x the clips add far fewer files than clips.
    small, big = results["60"], results["240"]
    for key in ("dvc_tracked_files", "cache_objects", "remote_objects", "data_files"):
        assert big[key] - small[key] < (240 - 60) / 10, (key, small[key], big[key])
    growth = data["growth"]
    assert growth["files DVC tracks (dvc.lock outs)"]["ratios"][0] < 1.5
    assert "| figure | 60 | 240 |" in proc.stdout and "nothing to do at every size" in proc.stdout
