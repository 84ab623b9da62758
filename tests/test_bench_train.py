"""``benchmarks/bench_train.py --quick`` runs and reports every configuration (no time is asserted: the
figures are measured on idle cores, see benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_train_quick_run_reports_each_configuration(tmp_path):
    report = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--quick",
                           "--work", str(tmp_path / "work"), "--json", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text())
    results = data["results"]
    assert set(results) == {"keras_cnn old", "keras_cnn 128", "keras_cnn auto", "keras_mlp"}
    assert data["info"]["frames"] == [7]  # 0.44 s at 8 kHz, hop 512
    assert results["keras_cnn old"]["crop_frames"] == results["keras_cnn 128"]["crop_frames"] == 128
    assert results["keras_cnn auto"]["crop_frames"] == 8  # the floor of the auto rule, not 128
    for name, r in results.items():
        # Each epoch's line was found in the training log, and the child's own peak RSS measured.
        assert r["epochs"] == 2 == len(r["epoch_seconds"]), name
        assert r["s_per_epoch"] > 0 and r["peak_rss_mb"] > 100 and 0 <= r["test_acc"] <= 1, name
    assert "| keras_cnn auto | 8 |" in proc.stdout
