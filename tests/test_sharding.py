"""``sharding.n_shards: auto``: Snakemake, DVC's stage commands and the jobs agree on one shard count,
sized from the data, and a run writes exactly those shards."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from audio_fixtures import write_tone
from conftest import make_project, run, tiny_params

from soundstage.ingest import auto_shards, scan_tree

TARGETS = ["data/features/table.parquet"]


def planned(project: Path, rule: str, *targets: str) -> int:
    """Jobs of ``rule`` in a dry run's summary."""
    out = run(["snakemake", "-n", "--cores", "2", *targets], project).stdout
    found = re.search(rf"^{rule}\s+(\d+)\s*$", out, re.M)
    return int(found.group(1)) if found else 0


def shard_files(project: Path, pattern: str) -> list[str]:
    return run(["soundstage", "shards", pattern], project).stdout.split()


@pytest.mark.integration
def test_auto_shards_of_a_user_dataset_agree_everywhere_and_follow_the_data(tmp_path: Path) -> None:
    data = tmp_path / "recordings"
    for i in range(24):
        write_tone(data / f"class{i % 3}" / f"take{i:02d}.wav", duration=0.5, sr=8000, freq=200.0 + 40 * (i % 3))
    params = tiny_params(**{"data.root": str(data), "data.name": "takes",
                            "sharding": {"n_shards": "auto", "auto_seconds": 0.02}})
    params["data"]["folder"]["group_regex"] = None
    project = make_project(tmp_path / "project", params)
    scan = scan_tree(data, params["data"]["extensions"])
    n = auto_shards(scan.n_audio, scan.audio_bytes, 0.02)
    assert n > 1

    # The count: what the jobs are told, what DVC's stage commands list, what the dry run plans.
    assert run(["soundstage", "shards"], project).stdout.split() == [str(n)]
    expected = [f"data/process/shards/{i:03d}.csv" for i in range(n)]
    assert shard_files(project, "data/process/shards/{}.csv") == expected
    dvc = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert "$(soundstage shards data/process/shards/{}.csv)" in dvc["process"]["cmd"]
    assert "$(soundstage shards data/features/shards/{}.parquet)" in dvc["features"]["cmd"]
    assert planned(project, "process", *TARGETS) == planned(project, "features", *TARGETS) == n

    run(["snakemake", "--cores", "2", *TARGETS], project)
    written = sorted(p.name for p in (project / "data/process/shards").glob("[0-9]*.csv")
                     if not p.name.endswith(".rejected.csv"))
    assert written == [Path(f).name for f in expected]
    manifest = pd.read_csv(project / "data/ingest/manifest.csv")
    assert set(manifest["shard"]) <= set(range(n)) and len(manifest) == 24
    assert len(pd.read_parquet(project / TARGETS[0])) == 24
    assert planned(project, "process", *TARGETS) == 0  # done: nothing to redo

    # Twice the data needs twice the shards: the count is re-derived and the sharded stages re-run.
    for i in range(24, 72):
        write_tone(data / f"class{i % 3}" / f"take{i:02d}.wav", duration=0.5, sr=8000, freq=200.0 + 40 * (i % 3))
    grown = scan_tree(data, params["data"]["extensions"])
    m = auto_shards(grown.n_audio, grown.audio_bytes, 0.02)
    assert m > n
    assert planned(project, "process", *TARGETS) == planned(project, "features", *TARGETS) == m
    run(["snakemake", "--cores", "2", *TARGETS], project)
    assert len(pd.read_parquet(project / TARGETS[0])) == 72
    assert pd.read_csv(project / "data/ingest/manifest.csv")["shard"].max() < m
    assert shard_numbers(project) == set(range(m))

    # Back to the first data, and to n shards: the files of shards n..m-1 (stores, tables, caches) go.
    for i in range(24, 72):
        (data / f"class{i % 3}" / f"take{i:02d}.wav").unlink()
    run(["snakemake", "--cores", "2", *TARGETS], project)
    assert len(pd.read_parquet(project / TARGETS[0])) == 24
    assert shard_numbers(project) == set(range(n))
    assert sorted(p.name for p in (project / "data/process/audio").glob("*.npy")) == [f"{i:03d}.npy" for i in range(n)]


def shard_numbers(project: Path) -> set[int]:
    """The shards that files under data/process and data/features are named after (stores, tables, caches)."""
    return {int(p.name[:3]) for stage in ("process", "features") for p in (project / "data" / stage).rglob("[0-9]*")
            if p.is_file()}


def test_the_shards_command_refuses_a_bad_count(tmp_path: Path) -> None:
    project = tmp_path
    (project / "params.yaml").write_text(yaml.safe_dump({"sharding": {"n_shards": 4}}))
    assert run(["soundstage", "shards", "x/{}.csv"], project).stdout.split() == [f"x/{i:03d}.csv" for i in range(4)]
    assert run(["soundstage", "--n-shards", "2", "shards"], project).stdout.split() == ["2"]
    bad = run(["soundstage", "--n-shards", "0", "shards"], project, check=False)
    assert bad.returncode == 2 and "--n-shards 0" in bad.stderr
    (project / "params.yaml").write_text(yaml.safe_dump({"sharding": {"n_shards": "lots"}}))
    bad = run(["soundstage", "shards"], project, check=False)
    assert bad.returncode == 2 and "sharding.n_shards" in bad.stderr
