"""Tests for soundstage.predict: ``soundstage predict`` on a bundle gives, for a clip, exactly the
probabilities the pipeline's own evaluation gave that clip.

A tiny demo (3 classes x 8 clips of 2 s at 16 kHz, cut into 1 s segments) goes through every stage
via ``soundstage.cli.main`` in a temporary project (ingest → process → split → features → stats →
train → evaluate, MLflow in a temporary SQLite store); then the source files of the test split are
predicted from each model's bundle and compared with ``reports/evaluate/<model>/predictions_test.csv``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from soundstage import cli
from soundstage.predict import PredictError, predict

# One worker runs this module: its pipeline fixture is built once (xdist --dist loadgroup).
pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.xdist_group("predict")]

REPO = Path(__file__).resolve().parents[1]
MODELS = ("random_forest", "keras_mlp", "keras_cnn")
N_SHARDS = 2


def tiny_params() -> dict:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"].update(name="tinydemo", root="data/demo")
    p["demo"] = {"n_classes": 3, "clips_per_class": 8, "n_artists": 4, "duration": 2.0, "sample_rate": 16000}
    p["sharding"] = {"n_shards": N_SHARDS}
    p["process"]["sample_rate"] = 16000
    p["process"]["duration"] = {"mode": "segment", "seconds": 1.0, "hop_seconds": 0.5, "min_seconds": 0.25,
                                "short": "pad"}
    p["split"]["ratios"] = {"train": 0.5, "val": 0.25, "test": 0.25}
    p["features"].update(n_fft=512, hop_length=128, n_mels=32, n_mfcc=13)
    p["train"]["models"] = list(MODELS)
    p["random_forest"]["n_estimators"] = 30
    p["keras_mlp"].update(hidden=[32], epochs=8, patience=3, batch_size=8)
    p["keras_cnn"].update(crop_frames=32, crops_per_clip=2, filters=[4, 8], epochs=3, patience=2, batch_size=8,
                          spec_augment={"freq_masks": 1, "freq_width": 4, "time_masks": 1, "time_width": 4})
    p["mlflow"] = {"tracking_uri": None}
    return p


def run(*argv: str) -> None:
    assert cli.main(["--params", "params.yaml", *argv]) == 0, argv


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The whole pipeline, stage by stage, in a temporary project folder."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        run("demo", "--out", "data/demo")
        run("ingest")
        shards = [f"{k:03d}" for k in range(N_SHARDS)]
        for k in range(N_SHARDS):
            run("process", "--shard", str(k))
        run("split", *(f"data/process/shards/{s}.csv" for s in shards))
        for s in shards:
            run("features", "--index", f"data/process/shards/{s}.csv")
        run("features", "--table", "--inputs", *(f"data/features/shards/{s}.parquet" for s in shards))
        run("stats", *(f"data/features/shards/{s}.parquet" for s in shards))
        for model in MODELS:
            run("train", "--model", model, "--out-dir", f"models/{model}/folds/0", "--threads", "2")
            run("evaluate", "--bundle", f"models/{model}/folds/0", "--out-dir", f"reports/evaluate/{model}")
    return root


@pytest.fixture(scope="module")
def test_files(project) -> pd.DataFrame:
    """Source files of the test split: ``clip_id, path`` (absolute, as ingest found them)."""
    manifest = pd.read_csv(project / "data/ingest/manifest.csv", dtype={"id": str})
    folds = pd.read_csv(project / "data/split/folds.csv", dtype=str)
    test_clips = folds.loc[folds["split"] == "test", "clip_id"].unique()
    files = manifest[manifest["id"].isin(test_clips)][["id", "path"]].rename(columns={"id": "clip_id"})
    assert len(files) >= 3
    return files.reset_index(drop=True)


def test_pipeline_was_segmented(project):
    table = pd.read_parquet(project / "data/features/table.parquet")
    per_clip = table.groupby("clip_id").size()
    assert (per_clip > 1).all()  # every 2 s clip became several 1 s segments
    preds = pd.read_csv(project / "reports/evaluate/random_forest/predictions_test.csv")
    folds = pd.read_csv(project / "data/split/folds.csv", dtype=str)
    assert len(preds) == folds.loc[folds["split"] == "test", "clip_id"].nunique()


@pytest.mark.parametrize("model", MODELS)
def test_predict_gives_the_pipeline_evaluation_probabilities(project, test_files, model):
    expected = pd.read_csv(project / f"reports/evaluate/{model}/predictions_test.csv", dtype={"clip_id": str})
    expected = expected.set_index("clip_id").loc[test_files["clip_id"]]
    table, errors = predict(bundle_dir=project / "models" / model / "folds" / "0", files=test_files["path"].tolist())
    assert errors == []
    assert table["file"].tolist() == test_files["path"].tolist()
    p_cols = [c for c in expected.columns if c.startswith("p_")]
    assert [c for c in table.columns if c.startswith("p_")] == p_cols
    # predictions_test.csv keeps 6 decimals.
    np.testing.assert_allclose(table[p_cols].to_numpy(), expected[p_cols].to_numpy(), atol=2e-6, rtol=0)
    assert table["label"].tolist() == expected["predicted"].tolist()
    np.testing.assert_allclose(table[p_cols].sum(axis=1), 1.0, atol=1e-5)
    assert table[p_cols].std(axis=0).max() > 0.01  # the clips get different probabilities: a real check


def test_bundle_is_self_contained(project, test_files, tmp_path, monkeypatch):
    """A bundle copied elsewhere predicts the same without the project's data."""
    shutil.copytree(project / "models" / "keras_cnn" / "folds" / "0", tmp_path / "bundle")
    monkeypatch.chdir(tmp_path)
    here, _ = predict(bundle_dir="bundle", files=test_files["path"].tolist()[:2])
    there, _ = predict(bundle_dir=project / "models/keras_cnn/folds/0", files=test_files["path"].tolist()[:2])
    pd.testing.assert_frame_equal(here, there)


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    files = {"text": tmp_path / "notes.wav", "silent": tmp_path / "silent.wav", "missing": tmp_path / "gone.wav",
             "folder": tmp_path / "folder.wav", "empty": tmp_path / "empty.flac"}
    files["text"].write_text("this is not audio\n" * 50)
    sf.write(files["silent"], np.zeros(8000, dtype=np.float32), 8000)
    files["folder"].mkdir()
    files["empty"].write_bytes(b"")
    return files


def test_bad_files_get_an_error_and_the_rest_are_predicted(project, test_files, bad_files):
    good = test_files["path"].tolist()[:2]
    order = [good[0], *map(str, bad_files.values()), good[1]]
    table, errors = predict(bundle_dir=project / "models" / "random_forest" / "folds" / "0", files=order)
    assert table["file"].tolist() == good
    assert all(isinstance(e, PredictError) for e in errors)
    by_file = {e.file: e for e in errors}
    assert set(by_file) == {str(p) for p in bad_files.values()}
    assert by_file[str(bad_files["missing"])].reason == "not_found"
    assert by_file[str(bad_files["silent"])].reason == "silent"
    for e in errors:
        assert e.file in e.message or Path(e.file).name in e.message


def test_predict_cli_formats_and_exit_codes(project, test_files, bad_files, capsys):
    bundle = str(project / "models" / "keras_mlp" / "folds" / "0")
    good = test_files["path"].tolist()[:2]
    expected, _ = predict(bundle_dir=bundle, files=good)
    labels = [c[2:] for c in expected.columns if c.startswith("p_")]

    assert cli.main(["predict", bundle, *good, str(bad_files["text"]), "--format", "json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [r["file"] for r in out["predictions"]] == good
    assert [r["label"] for r in out["predictions"]] == expected["label"].tolist()
    np.testing.assert_allclose([r[f"p_{lab}"] for r in out["predictions"] for lab in labels],
                               expected[[f"p_{lab}" for lab in labels]].to_numpy().ravel(), rtol=1e-12)
    assert [e["file"] for e in out["errors"]] == [str(bad_files["text"])]
    assert str(bad_files["text"]) in captured.err

    assert cli.main(["predict", bundle, *good, "--format", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(csv.columns) == ["file", "label", *(f"p_{lab}" for lab in labels)]
    np.testing.assert_allclose(csv[[f"p_{lab}" for lab in labels]], expected[[f"p_{lab}" for lab in labels]],
                               atol=1e-6)

    assert cli.main(["predict", bundle, good[0]]) == 0
    text = capsys.readouterr().out
    assert expected["label"][0] in text and "p_" in text

    # Nothing predictable: a non-zero exit, every file named on stderr.
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", bundle, str(bad_files["missing"]), str(bad_files["text"])])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert str(bad_files["missing"]) in err and str(bad_files["text"]) in err

    assert cli.main(["predict", str(project / "nowhere"), good[0]]) == 1
    assert "not a soundstage model bundle" in capsys.readouterr().err
