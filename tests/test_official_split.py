"""End to end: an official test set given by the file names (free-spoken-digit takes 0-1), through
ingest's metadata columns, the split's column mode and a real `snakemake` run; the split's warnings
are repeated at the end of the run, and the metrics carry their bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_project, run, tiny_params

from soundstage.io import read_csv

pytestmark = pytest.mark.slow

SPEAKERS = ("ana", "ben", "cho", "dee")


def make_digits(root: Path, *, takes: int = 4, sr: int = 16000) -> list[str]:
    """``<digit>_<speaker>_<take>.wav`` for digits 0-3 by every speaker, and digit 9 by ``ana`` only
    (a class one speaker holds: it cannot be in val as well as train)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    names = [(d, s) for d in range(4) for s in SPEAKERS] + [(9, "ana")]
    ids = []
    for digit, speaker in names:
        for take in range(takes):
            t = np.arange(int(sr * rng.uniform(0.6, 0.9))) / sr
            f0 = 200 + 90 * digit + 5 * SPEAKERS.index(speaker)
            y = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(t.size)
            sf.write(root / f"{digit}_{speaker}_{take}.wav", y.astype(np.float32), sr, subtype="PCM_16")
            ids.append(f"{digit}_{speaker}_{take}")
    return ids


def test_file_name_rule_gives_the_official_test_set_through_snakemake(tmp_path: Path) -> None:
    ids = make_digits(tmp_path / "recordings")
    params = tiny_params()
    params["data"].update(name="digits", root=str(tmp_path / "recordings"), layout="regex")
    params["data"]["regex"]["pattern"] = r"(?P<label>\d)_(?P<group>[a-z]+)_(?P<take>\d+)\.wav"
    params["train"]["models"] = ["random_forest"]
    params["split"].update(mode="column", column={"name": "take", "test": ["0", "1"], "val": None}, val_share=0.25)
    root = make_project(tmp_path / "project", params)

    proc = run(["snakemake", "--workflow-profile", "workflow/profiles/default", "--cores", "2"], root)

    manifest = read_csv(root / "data/ingest/manifest.csv", text=["take"])
    assert sorted(manifest["take"].unique()) == ["0", "1", "2", "3"]  # a named group of the pattern, as text
    folds = read_csv(root / "data/split/folds.csv")
    assert set(folds["fold"].astype(str)) == {"0"}
    splits = {s: set(folds.loc[folds["split"] == s, "clip_id"]) for s in ("train", "val", "test")}
    assert splits["test"] == {i for i in ids if i.rsplit("_", 1)[1] in ("0", "1")}
    assert splits["train"] | splits["val"] == set(ids) - splits["test"]
    speakers = {s: {i.split("_")[1] for i in splits[s]} for s in ("train", "val")}
    assert speakers["val"] and not speakers["train"] & speakers["val"]  # val carved out by whole speakers
    assert read_csv(root / "data/split/unassigned.csv").empty

    # The warning about digit 9 reaches the end of the run's output, after the jobs' own logs.
    end = proc.stderr[proc.stderr.rindex("soundstage: rejected"):]
    assert "soundstage: split: WARNING" in end and "'9'" in end, end

    metrics = json.loads((root / "reports/evaluate/random_forest/metrics.json").read_text())
    low, high = metrics["test"]["accuracy_ci95"]
    assert low <= metrics["test"]["accuracy"] <= high
    assert metrics["test"]["bootstrap"]["unit"] == "group" and metrics["test"]["bootstrap"]["n_units"] == 4
