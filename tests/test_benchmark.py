"""The benchmark script runs as the README says, on every side, and their CMVN results agree.

A smoke run (``--quick``: a few clips of each length, one pair of runs, a 3x dataset). No time
is asserted here: speed figures live in ``benchmarks/`` and the README, measured on idle cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_run(script: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """``benchmarks/<script> --quick``, its work folder and JSON report in ``tmp_path``: the process and
    the report's figures."""
    report = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick",
         "--work", str(tmp_path / "work"), "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report.read_text())


@pytest.mark.slow
def test_benchmark_quick_run_reports_every_side_with_the_same_statistics(tmp_path):
    proc, data = quick_run("bench_features.py", tmp_path)

    assert set(data["sets"]) == {"30 s", "0.25-0.95 s"}
    for name, runs in data["sets"].items():
        assert set(runs) == {"reference", "fair", "soundstage"}, name
        ours = runs["soundstage"]
        assert ours["rejected"] == 0 and ours["stats_wall_s"] < ours["wall"] and len(ours["walls"]) == 1, name
        for ref in (runs["reference"], runs["fair"]):  # seed-style, then one STFT per clip
            assert ours["clips"] == ref["clips"] > 0, name
            assert ours["audio_s"] == pytest.approx(ref["audio_s"], rel=1e-6), name
            # The train-split log-mel CMVN: all frames in memory (reference) vs merged shard moments.
            assert ours["count"] == ref["count"] > 0, name
            np.testing.assert_allclose(ours["mean"], ref["mean"], rtol=0, atol=1e-3, err_msg=name)
            np.testing.assert_allclose(ours["std"], ref["std"], rtol=1e-5, err_msg=name)
            assert ours["wall"] > 0 and ref["wall"] > 0, name
            assert len(ref["walls"]) == 1, name
    # The 3x dataset is the same audio under new ids: three times the frames, the same statistics.
    assert set(data["scaled"]) == {"30 s x3", "0.25-0.95 s x3"}
    for name, big in data["scaled"].items():
        one = data["sets"][name.removesuffix(" x3")]["soundstage"]
        assert big["clips"] == 3 * one["clips"] and big["count"] == 3 * one["count"], name
        np.testing.assert_allclose(big["mean"], one["mean"], rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(big["std"], one["std"], rtol=1e-9, err_msg=name)
    assert "vs seed-style" in proc.stdout and "vs fair ref." in proc.stdout
    assert proc.stdout.count("-> OK") == 4 and "MISMATCH" not in proc.stdout


@pytest.mark.slow
def test_folds_benchmark_quick_run_computes_the_features_once_per_side(tmp_path):
    proc, data = quick_run("bench_folds.py", tmp_path)
    k = data["k"]
    assert set(data["runs"]) == {"1", str(k)}
    # Every clip's features once on each side, whatever the number of folds.
    assert data["computed"] == {"1": data["clips"], str(k): data["clips"]}
    for runs in data["runs"].values():
        assert all(r["features"] > 0 and r["folds"] > 0 for r in runs)
    assert f"folds T_{k} / T_1" in proc.stdout and "K-fold total" in proc.stdout


@pytest.mark.slow
def test_e2e_benchmark_quick_run_reports_every_side_and_where_soundstage_spends_its_time(tmp_path):
    proc, data = quick_run("bench_e2e.py", tmp_path)

    assert set(data["sets"]) == {"short", "30s", "long"}
    for name, runs in data["sets"].items():
        dataset = data["datasets"][name]
        assert dataset["clips"] > 0 and dataset["audio_s"] > 0, name
        assert set(runs) == {"soundstage", "reference", "fair", "essentia", "opensmile"}, name
        for side, r in runs.items():
            if side in ("essentia", "opensmile") and r.get("status"):  # the `bench` extra is optional
                assert r["status"].startswith("not installed"), (name, side)
                continue
            assert r["clips"] == dataset["clips"] and r["audio_s"] == dataset["audio_s"], (name, side)
            assert r["wall"] > 0 and r["cpu_s"] > 0 and r["rss_max_proc_mb"] > 0, (name, side)
            assert len(r["walls"]) == 1, (name, side)
            if side != "soundstage":
                assert r["ref_audio_s"] == pytest.approx(dataset["audio_s"], rel=0.01), (name, side)
                assert r["vs_seed"] > 0 and r["vs_fair"] > 0, (name, side)
        ours = runs["soundstage"]
        # The real command built the features table: one row per clip the references computed.
        assert ours["table_rows"] == runs["reference"]["clips"] == runs["fair"]["clips"], name
        assert ours["shards"] >= 1, name
        # The fixed-cost breakdown: its parts, in order, make up no more than the wall time.
        b = ours["breakdown"]
        parts = (b["startup_dag_s"], b["jobs_span_s"], b["end_s"])
        assert all(p >= 0 for p in parts) and sum(parts) <= ours["wall"] + 1e-6, (name, b)
        assert 0 <= b["no_job_running_s"] <= b["jobs_span_s"], name
        assert b["job_sum_s"] <= 2 * b["jobs_span_s"] + 0.1, name  # --cores 2
        assert {"ingest", "process", "split", "features", "features_table", "stats"} <= set(b["rules"]), name
        assert b["n_jobs"] == sum(rule["jobs"] for rule in b["rules"].values()), name
        assert b["ingest_s"] == b["rules"]["ingest"]["sum_s"] > 0, name
        assert b["imports_job_s"] == pytest.approx(b["n_jobs"] * data["imports_s"]) and data["imports_s"] > 0, name
        assert 0 <= b["audio_work_job_s"] <= b["job_sum_s"], name
        assert ours["dry_run_s"] > 0, name
    # make run's pipeline on the (smaller) demo, every rule through the report.
    (demo,) = data["demo"].values()
    assert demo["wall"] > 0 and {"demo", "train", "evaluate", "report"} <= set(demo["breakdown"]["rules"])
    assert "vs seed-style" in proc.stdout and "where the time goes" in proc.stdout
