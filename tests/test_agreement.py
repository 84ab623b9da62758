"""Snakemake and DVC agree, on a dataset large enough that Snakemake judges its shard tables by
modification time (its checksums cover only files under 1 MB): after `dvc repro`, `snakemake -n` has
nothing to do; after `snakemake`, neither has `snakemake -n` nor `dvc status`, and no output was
rewritten after the job that made it (the run-end `dvc commit` used to relink some of them)."""

from __future__ import annotations

import json
import os
from base64 import urlsafe_b64decode
from pathlib import Path

import pytest
from conftest import run
from test_faults import SNAKEMAKE, digits_project, make_digits, nothing_to_do, set_param

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("agreement")]

N_CLIPS = 3000


def job_end_times(root: Path) -> dict[str, float]:
    """Each output's job end time, from Snakemake's metadata records (file persistence)."""
    folder = root / ".snakemake" / "metadata"
    ends = {}
    for record in folder.rglob("*"):
        if record.is_file():
            encoded = "".join(p.lstrip("@") for p in record.relative_to(folder).parts)
            ends[urlsafe_b64decode(encoded).decode()] = json.loads(record.read_text())["endtime"]
    return ends


def test_snakemake_and_dvc_agree_at_scale(tmp_path_factory):
    data = make_digits(tmp_path_factory.mktemp("recordings") / "digits", N_CLIPS, seconds=0.45)
    root = digits_project(tmp_path_factory.mktemp("agree") / "soundstage", data)

    run(["dvc", "repro"], root, timeout=1800)
    shards = sorted((root / "data/features/shards").glob("*.parquet"))
    assert shards and min(p.stat().st_size for p in shards) > 1_000_000  # beyond Snakemake's checksums
    nothing_to_do(root)

    set_param(root, "features", "n_mels", 64)
    done = run(SNAKEMAKE, root, timeout=1800)
    assert "Nothing to be done" not in done.stdout + done.stderr
    nothing_to_do(root)
    assert "up to date" in run(["dvc", "status"], root).stdout
    ends = job_end_times(root)
    late = [path for path, end in ends.items()
            if (root / path).is_file() and os.stat(root / path).st_mtime > end + 0.5]
    assert ends and not late, f"rewritten after their job ended: {late[:5]}"
    linked = [p for top in ("data", "models", "reports") for p in (root / top).rglob("*")
              if p.is_file() and p.stat().st_nlink > 1]
    assert not linked, f"hard-linked outputs (DVC relinks them): {linked[:5]}"
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], root).stdout
    nothing_to_do(root)
