"""Tests for soundstage.train: model switch, waveform augmentation, MLflow runs (temporary SQLite
store) with their tags, params and model flavors, and reproducibility of train + evaluate.

The dataset is built like the pipeline builds it (processed audio in the process stage's shard
stores and indexes → ``clip_features`` → table, log-mels and train statistics) but tiny: three
tone-like classes, half-second clips at 8 kHz.
"""

from __future__ import annotations

import json
import os
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest
from audio_fixtures import write_audio_store

from soundstage import models as M
from soundstage.bundle import load_bundle
from soundstage.cache import key_of
from soundstage.evaluate import evaluate
from soundstage.features import clip_features, feature_columns
from soundstage.features_core import FeatureConfig
from soundstage.io import read_csv, write_csv
from soundstage.process import INDEX_COLUMNS, read_index
from soundstage.split import FOLD_COLUMNS, assignment_hash, read_folds
from soundstage.store import STORE_COLUMNS, StoreWriter
from soundstage.train import Augmented, augment_clips, fit, train

# One worker runs this module: its dataset and MLflow store are built once (xdist --dist loadgroup).
pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.xdist_group("train")]

SR = 8000
LABELS = ["high", "low", "mid"]
FREQS = {"low": 220.0, "mid": 700.0, "high": 2000.0}
FEATURES = {"n_fft": 256, "hop_length": 64, "n_mels": 16, "n_mfcc": 8, "chroma": False, "n_bands": 4,
            "spectral": ["centroid", "rolloff"], "summary": ["mean", "std"]}
PARAMS = {
    "random_forest": {"n_estimators": 20, "max_depth": None, "min_samples_leaf": 1, "max_features": "sqrt",
                      "class_weight": "balanced"},
    "keras_mlp": {"hidden": [16], "dropout": 0.1, "l2": 0.0, "learning_rate": 0.01, "batch_size": 8,
                  "epochs": 6, "patience": 3, "lr_factor": 0.5, "lr_patience": 2},
    "keras_cnn": {"crop_frames": "auto", "crops_per_clip": 2, "hop_frames": None, "filters": [4, 8], "first_stride": 2,
                  "dropout": 0.1, "learning_rate": 0.01, "batch_size": 8, "epochs": 3, "patience": 2,
                  "lr_factor": 0.5, "lr_patience": 1,
                  "spec_augment": {"freq_masks": 1, "freq_width": 2, "time_masks": 1, "time_width": 3}},
}
AUGMENT = {"copies": 1, "noise_snr_db": [10.0, 30.0], "time_stretch": [0.9, 1.1], "pitch_shift": [-1.0, 1.0],
           "gain_db": [-6.0, 6.0]}


def clip_audio(label: str, i: int, seed: int) -> np.ndarray:
    r = np.random.default_rng([seed, i, LABELS.index(label)])
    t = np.arange(SR // 2) / SR
    f = FREQS[label] * r.uniform(0.9, 1.1)
    y = 0.5 * np.sin(2 * np.pi * f * t) + 0.2 * np.sin(2 * np.pi * 2.01 * f * t) + 0.05 * r.normal(size=t.size)
    return (y / np.abs(y).max() * 0.9).astype(np.float32)


N_SHARDS = 2


def build_dataset(root, *, per_split=(("train", 5), ("val", 2), ("test", 2)), seed: int = 0) -> dict:
    """Processed audio (``root/process``: the audio stores and shard indexes of :data:`N_SHARDS`
    process shards, and a stale index of a third shard from an earlier run, whose store is gone), log-mels,
    features table and train statistics, as the pipeline writes them."""
    config = FeatureConfig.from_dict(FEATURES)
    rows = []
    store = StoreWriter(root / "logmel" / "000.npy", config.n_mels)
    train_frames = []
    processed: dict[int, list[tuple[dict, np.ndarray]]] = {k: [] for k in range(N_SHARDS)}
    for split, n in per_split:
        for label in LABELS:
            for i in range(n):
                clip = f"{label}.{split}{i}"
                y = clip_audio(label, hash(split) % 97 + i, seed)
                shard = len(rows) % N_SHARDS
                processed[shard].append(({"id": clip, "clip_id": clip, "path": f"raw/{label}/{clip}.wav",
                                          "label": label, "group": clip, "duration": y.size / SR, "start": 0.0,
                                          "sample_rate": SR, "shard": shard, "key": f"k-{clip}",
                                          "store": f"{shard:03d}", "frames": y.size}, y))
                feats, summary = clip_features(y, sr=SR, config=config)
                offset = store.append(feats["logmel"])
                if split == "train":
                    train_frames.append(feats["logmel"])
                rows.append({"id": clip, "clip_id": clip, "label": label, "group": clip, "store": "000",
                             "offset": offset, "frames": feats["logmel"].shape[1], "split": split, **summary})
    store.close()
    process = root / "process"
    for shard, segments in processed.items():
        offsets = write_audio_store(process / "audio" / f"{shard:03d}.npy", [y for _, y in segments])
        index = pd.DataFrame([r for r, _ in segments]).assign(offset=offsets)
        write_csv(process / "shards" / f"{shard:03d}.csv", index[INDEX_COLUMNS])
    # Left by an earlier run with more shards: it names a train clip, in a store that no longer exists.
    stale = read_csv(process / "shards" / "000.csv").head(1).assign(shard=N_SHARDS, store=f"{N_SHARDS:03d}")
    write_csv(process / "shards" / f"{N_SHARDS:03d}.csv", stale)
    table = pd.DataFrame(rows)
    cols = [c for c in table.columns if c not in ("id", "clip_id", "label", "group", "split", *STORE_COLUMNS)]
    table[cols] = table[cols].astype(np.float32)
    table.drop(columns="split").to_parquet(root / "table.parquet")  # the features table has no split
    folds = table[["id", "clip_id", "label", "group", "split"]].assign(fold="0")[FOLD_COLUMNS]
    folds.to_csv(root / "folds.csv", index=False)
    # Two folds; in fold 1 the val and test clips train and nothing is held out.
    other = folds[folds["split"] != "train"].assign(fold="1", split="train")
    pd.concat([folds, other]).to_csv(root / "folds2.csv", index=False)
    frames = np.concatenate(train_frames, axis=1).astype(np.float64)
    np.savez(root / "logmel.npz", mean=frames.mean(axis=1), std=frames.std(axis=1), count=frames.shape[1])
    return {"root": root, "table": table, "config": config, "process": process,
            "index": read_index(process, N_SHARDS)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_dataset(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One temporary MLflow store for the module (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def flat_params_of(model: str) -> dict:
    return {f"{model}.{k}": v for k, v in PARAMS[model].items() if not isinstance(v, dict)}


def run_train(ds, model: str, out, uri: str, *, augment=None, tags=None, fold: str = "0", folds: str = "folds.csv",
              **kwargs):
    root = ds["root"]
    return train(model=model, table_path=root / "table.parquet", folds_path=root / folds, fold=fold,
                 out_dir=out, params=PARAMS[model], seed=7,
                 process_params={"sample_rate": SR}, feature_params=FEATURES, experiment="toyset", tracking_uri=uri,
                 tags=tags or {"git.commit": "c0ffee", "git.dirty": "true", "data.table": "abc123"},
                 flat_params=flat_params_of(model),
                 logmel_dir=root / "logmel" if model == "keras_cnn" else None,
                 stats_path=root / "logmel.npz" if model == "keras_cnn" else None,
                 augment=augment, process_dir=root / "process", n_shards=N_SHARDS, **kwargs)


# ------------------------------------------------------------------ augmentation


def test_augment_clips_is_seeded_per_clip_and_copy(dataset):
    train_rows = dataset["table"][dataset["table"]["split"] == "train"].head(3)
    kw = dict(process_dir=dataset["process"], index=dataset["index"], feature_config=dataset["config"], seed=3,
              **{k: v for k, v in AUGMENT.items() if k != "copies"})
    a = augment_clips(rows=train_rows, copies=2, **kw)
    b = augment_clips(rows=train_rows.iloc[::-1], copies=2, **kw)  # order does not matter
    assert isinstance(a, Augmented) and len(a) == 6 and len(a.logmels) == 6
    assert a.rows["id"].tolist() == [f"{i}__aug{k}" for i in train_rows["id"] for k in range(2)]
    assert set(a.rows["split"]) == {"train"}
    assert a.rows["label"].tolist() == np.repeat(train_rows["label"].to_numpy(), 2).tolist()
    cols = feature_columns(dataset["table"])
    assert set(cols) <= set(a.rows.columns)
    b_rows = b.rows.set_index("id").loc[a.rows["id"]]
    np.testing.assert_array_equal(a.rows[cols].to_numpy(), b_rows[cols].to_numpy())
    # Copies differ from each other and from the original clip.
    first = a.rows[cols].to_numpy(np.float64)
    original = train_rows[cols].to_numpy(np.float64)
    assert not np.allclose(first[0], first[1])
    assert not np.allclose(first[0], original[0])
    assert a.logmels[0].dtype == np.float32 and a.logmels[0].shape[0] == FEATURES["n_mels"]
    other_seed = augment_clips(rows=train_rows, copies=1, **{**kw, "seed": 4})
    assert not np.allclose(other_seed.rows[cols].to_numpy(np.float64)[0], first[0])
    # Without transforms a copy is the clip itself.
    plain = augment_clips(rows=train_rows.head(1), process_dir=dataset["process"], index=dataset["index"],
                          feature_config=dataset["config"], seed=0)
    np.testing.assert_allclose(plain.rows[cols].to_numpy(np.float64)[0], original[0], rtol=1e-5, atol=1e-5)


def test_augment_clips_errors(dataset, tmp_path):  # bad augment params: tests/test_config.py
    """The index places the clip in a store that is not there (another process folder): the error names
    the store."""
    rows = dataset["table"].head(1)
    with pytest.raises(FileNotFoundError, match=r"000\.npy: no such store \(run the process stage again\)"):
        augment_clips(rows=rows, process_dir=tmp_path, index=dataset["index"], feature_config=dataset["config"],
                      seed=0)


def test_augment_clips_refuses_a_clip_missing_from_the_process_index(dataset):
    """A train clip that no process shard index names (an index of another run, or too few shards read)
    raises FileNotFoundError naming the clip; the indexes of the first N_SHARDS shards name every clip, and
    a stale shard's index read with them misplaces one (train reads them with ``n_shards``)."""
    train_rows = dataset["table"][dataset["table"]["split"] == "train"].head(3)
    missing = train_rows["id"].iloc[1]
    index = dataset["index"][dataset["index"]["id"] != missing]
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{missing}' is in no process shard index")):
        augment_clips(rows=train_rows, process_dir=dataset["process"], index=index,
                      feature_config=dataset["config"], seed=0, gain_db=(-6.0, 6.0))
    # The shard indexes as train reads them: only the first N_SHARDS (the stale third one's store is gone).
    assert len(dataset["index"]) == len(dataset["table"])
    ok = augment_clips(rows=train_rows, process_dir=dataset["process"], index=dataset["index"],
                       feature_config=dataset["config"], seed=0, gain_db=(-6.0, 6.0), logmels=False)
    assert ok.rows["id"].tolist() == [f"{i}__aug0" for i in train_rows["id"]]
    with pytest.raises(FileNotFoundError, match=r"002\.npy: no such store"):
        augment_clips(rows=train_rows, process_dir=dataset["process"], index=read_index(dataset["process"]),
                      feature_config=dataset["config"], seed=0)


def test_fit_uses_augmented_rows_but_real_statistics(dataset):
    table = dataset["table"]
    aug = augment_clips(rows=table[table["split"] == "train"], process_dir=dataset["process"], index=dataset["index"],
                        feature_config=dataset["config"], seed=1, copies=1, gain_db=(-6.0, 6.0), logmels=False)
    rf, meta, history = fit(model="random_forest", table=table, params=PARAMS["random_forest"], seed=0, augmented=aug)
    assert meta["training"] == {"n_train": 15, "n_val": 6, "n_augmented": 15}
    assert history == {}
    assert rf.n_features_in_ == len(meta["feature_columns"])
    mlp, meta, history = fit(model="keras_mlp", table=table, params=PARAMS["keras_mlp"], seed=0, augmented=aug)
    real = M.fit_scaler(table.loc[table["split"] == "train", meta["feature_columns"]].to_numpy(np.float64))
    np.testing.assert_array_equal(meta["standardizer"]["mean"], real.mean_)
    assert 1 <= len(history["val_loss"]) <= PARAMS["keras_mlp"]["epochs"]
    with pytest.raises(ValueError, match="log-mels"):
        fit(model="keras_cnn", table=table, params=PARAMS["keras_cnn"], seed=0,
            logmel_dir=dataset["root"] / "logmel", logmel_stats=dict(np.load(dataset["root"] / "logmel.npz")),
            augmented=aug)
    with pytest.raises(ValueError, match="unknown model"):
        fit(model="svm", table=table, params={}, seed=0)
    with pytest.raises(ValueError, match="train split is empty"):
        fit(model="random_forest", table=table[table["split"] != "train"], params=PARAMS["random_forest"], seed=0)


# ------------------------------------------------------------------ MLflow runs


@pytest.mark.parametrize("model", ["random_forest", "keras_mlp", "keras_cnn"])
def test_train_logs_a_complete_mlflow_run(dataset, tmp_path, uri, model, capsys):
    import mlflow

    bundle = run_train(dataset, model, tmp_path / "models" / model, uri,
                       augment=AUGMENT if model == "keras_cnn" else None)
    # One line per epoch in the job log (stderr), as the epochs run.
    progress = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(f"{model} epoch ")]
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(bundle.meta["mlflow"]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "toyset"
    assert run.info.run_name == model and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["model"] == model and tags["git.commit"] == "c0ffee" and tags["git.dirty"] == "true"
    assert tags["data.table"] == "abc123"
    assert tags["soundstage.pid"] == str(os.getpid()) and tags["soundstage.host"]
    assert "soundstage.error" not in tags
    # The clip -> split assignment trained on, on the run and in the bundle: runs on other splits stand out.
    assert tags["split.hash"] == assignment_hash(read_folds(dataset["root"] / "folds.csv"))
    assert load_bundle(bundle.directory).meta["training"]["split_hash"] == tags["split.hash"]
    assert tags["soundstage.fold"] == "0" and load_bundle(bundle.directory).meta["training"]["fold"] == "0"
    # The hash of the params the run logs: evaluate can tell metrics of other params apart.
    assert bundle.meta["params_hash"] == key_of(flat_params_of(model))
    assert load_bundle(bundle.directory).meta["params_hash"] == bundle.meta["params_hash"]
    assert run.data.params[f"{model}.learning_rate" if model != "random_forest" else "random_forest.n_estimators"]
    metrics = run.data.metrics
    assert metrics["fit_seconds"] > 0 and metrics["n_train_clips"] == 15 and metrics["n_val_clips"] == 6
    if model == "keras_cnn":
        assert metrics["n_augmented_clips"] == 15 and "augment_seconds" in metrics
        assert bundle.meta["training"]["augment"]["copies"] == 1
    if model != "random_forest":
        assert 1 <= metrics["epochs_trained"] <= PARAMS[model]["epochs"]
        assert [ln.split(":")[0] for ln in progress] == [f"{model} epoch {i}/{PARAMS[model]['epochs']}"
                                                         for i in range(1, int(metrics["epochs_trained"]) + 1)]
        assert all(": loss " in ln and ", val_loss " in ln and ln.endswith(" s") for ln in progress)
        assert len(client.get_metric_history(run.info.run_id, "history_val_loss")) == metrics["epochs_trained"]
    else:
        assert progress == []
    bundle_files = {f.path for f in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/bundle.json", f"bundle/{M.MODEL_FILENAMES[model]}"} <= bundle_files

    # The model is logged with its flavor and loads back to the same predictions.
    # Two models per run: the bare one with its flavor, and the whole chain (tests/test_pyfunc.py).
    outputs = {client.get_logged_model(o.model_id).name: o for o in run.outputs.model_outputs}
    assert set(outputs) == {"model", "pipeline"}
    uri_model = f"models:/{outputs['model'].model_id}"
    table = dataset["table"]
    rows = table[table["split"] == "test"]
    if model == "keras_cnn":
        from soundstage.features import load_logmels

        # crop_frames: auto: the crop the train clips need (0.5 s at hop 64: 63 frames, not a padded 128),
        # recorded in the bundle for predict / evaluate / stream.
        lengths = [s.shape[1] for s in load_logmels(table.loc[table["split"] == "train"], dataset["root"] / "logmel")]
        crop = M.auto_crop_frames(lengths)
        assert crop == max(lengths) == 63
        assert load_bundle(bundle.directory).meta["cnn"] == {"crop_frames": crop, "hop_frames": crop // 2}
        assert bundle.model.input_shape[2] == crop
        stats = bundle.meta["logmel_stats"]
        mean, std = np.asarray(stats["mean"])[:, None], np.asarray(stats["std"])[:, None]
        x = np.stack([M.sliding_crops(((s - mean) / std).astype(np.float32), crop_frames=crop)[0]
                      for s in load_logmels(rows, dataset["root"] / "logmel")])[..., None]
    else:
        x = rows[bundle.meta["feature_columns"]].to_numpy(np.float32)
        if model == "keras_mlp":
            x = M.scaler_from_dict(bundle.meta["standardizer"]).transform(x.astype(np.float64)).astype(np.float32)
    if model == "random_forest":
        flavored = mlflow.sklearn.load_model(uri_model)
        expected = bundle.model.predict_proba(x)
        np.testing.assert_array_equal(flavored.predict_proba(x), expected)
    else:
        flavored = mlflow.keras.load_model(uri_model)
        expected = bundle.model.predict(x, verbose=0)
        np.testing.assert_allclose(flavored.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-7)
    pyfunc = mlflow.pyfunc.load_model(uri_model)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x)), expected, rtol=1e-6, atol=1e-7)
    assert pyfunc.metadata.get_input_schema() is not None


def test_train_fits_the_rows_of_its_fold(dataset, tmp_path, uri):
    import mlflow

    bundle = run_train(dataset, "random_forest", tmp_path / "fold1", uri, fold="1", folds="folds2.csv")
    training = bundle.meta["training"]
    assert (training["n_train"], training["n_val"], training["fold"]) == (12, 0, "1")
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(bundle.meta["mlflow"]["run_id"])
    assert run.info.run_name == "random_forest fold 1" and run.data.tags["soundstage.fold"] == "1"
    with pytest.raises(ValueError, match="'7'"):
        run_train(dataset, "random_forest", tmp_path / "fold7", uri, fold="7", folds="folds2.csv")
    assert not (tmp_path / "fold7").exists()


def test_train_logs_its_dataset_as_a_training_input(dataset, tmp_path, uri):
    """The run table's Dataset column: the data's name and version, where it lies, and its size."""
    import mlflow

    table = dataset["table"]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"id": table["clip_id"], "duration": 0.5, "label": table["label"]}).to_csv(manifest, index=False)
    tags = {"git.commit": "c0ffee", "data.name": "toys", "data.raw_fingerprint": "f1" * 20, "data.table": "abc123"}
    data_root = dataset["root"] / "raw"
    client = mlflow.MlflowClient(tracking_uri=uri)
    for fold in ("0", "1"):
        bundle = run_train(dataset, "random_forest", tmp_path / fold, uri, tags=tags, fold=fold, folds="folds2.csv",
                           data_root=data_root, manifest_path=manifest)
        (logged,) = client.get_run(bundle.meta["mlflow"]["run_id"]).inputs.dataset_inputs
        assert logged.dataset.name == "toys"
        assert logged.dataset.digest == "f1" * 18  # the raw data's fingerprint, as long as MLflow takes
        assert json.loads(logged.dataset.source) == {"uri": str(data_root.resolve())}
        # The whole table, whichever fold: both runs have one dataset, whose profile MLflow keeps from the first.
        assert json.loads(logged.dataset.profile) == {"clips": 27, "classes": 3, "hours": round(27 * 0.5 / 3600, 4)}
        assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": "training"}
    experiment = client.get_experiment_by_name("toyset")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_training_that_fails_on_a_full_disk_ends_its_run_failed(dataset, tmp_path, uri, monkeypatch):
    """The observed failure: ENOSPC while the bundle's model is written. The run ends FAILED with the error,
    the error names the file, and no partial file is left."""
    import errno

    import mlflow
    import skops.io as sio

    def full_disk(model, file):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sio, "dump", full_disk)
    out = tmp_path / "models" / "random_forest"
    with pytest.raises(OSError, match="No space left on device") as exc:
        run_train(dataset, "random_forest", out, uri, tags={"test.case": "full-disk"})
    assert str(out / "model.skops") in str(exc.value)
    assert list(out.iterdir()) == []
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("toyset").experiment_id],
                                filter_string="tags.`test.case` = 'full-disk'")
    assert run.info.status == "FAILED"
    assert run.data.tags["soundstage.error"] == f"OSError: {exc.value}"
    assert mlflow.active_run() is None


def test_log_model_refuses_a_forest_holding_types_outside_the_trusted_list(dataset, uri):
    """The MLflow copy of a forest is trusted with models.TRUSTED_SKOPS_TYPES, as the bundle is."""
    import mlflow

    from soundstage.train import _log_model

    table = dataset["table"]
    rf, _, _ = fit(model="random_forest", table=table, params={**PARAMS["random_forest"], "n_estimators": 2}, seed=0)
    rf.extra_ = np.polynomial.Polynomial([1.0, 2.0])  # a numpy type no project forest holds
    mlflow.set_tracking_uri(uri)
    with pytest.raises(ValueError, match=r"numpy\.polynomial\.polynomial\.Polynomial"):
        _log_model(rf, "random_forest")


# ------------------------------------------------------------------ reproducibility


def test_same_params_and_data_give_the_same_metrics(dataset, tmp_path, uri):
    """Train + evaluate every model twice from scratch: identical metrics and predictions."""
    outputs = {}
    for attempt in ("a", "b"):
        for model in ("random_forest", "keras_mlp", "keras_cnn"):
            bundle = run_train(dataset, model, tmp_path / attempt / "models" / model, uri,
                               augment=AUGMENT if model == "keras_mlp" else None)
            out = tmp_path / attempt / "reports" / model
            evaluate(bundle_dir=bundle.directory, table_path=dataset["root"] / "table.parquet", out_dir=out,
                     folds_path=dataset["root"] / "folds.csv", logmel_dir=dataset["root"] / "logmel",
                     log_to_mlflow=False)
            outputs[attempt, model] = out
    for model in ("random_forest", "keras_mlp", "keras_cnn"):
        a, b = outputs["a", model], outputs["b", model]
        metrics_a, metrics_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
        # Each names its own MLflow run; both record the hash of the same params.
        runs = [m["provenance"].pop("bundle") for m in (metrics_a, metrics_b)]
        assert runs[0] != runs[1]
        assert metrics_a["provenance"]["params_hash"] == key_of(flat_params_of(model))
        assert metrics_a["provenance"]["split_hash"] == assignment_hash(read_folds(dataset["root"] / "folds.csv"))
        assert metrics_a == metrics_b, model
        for split in ("val", "test"):
            assert (a / f"predictions_{split}.csv").read_bytes() == (b / f"predictions_{split}.csv").read_bytes()
        m = json.loads((a / "metrics.json").read_text())
        assert m["test"]["n"] == 6 and m["test"]["accuracy"] >= 0.0
    # The forest separates these tones.
    assert json.loads((outputs["a", "random_forest"] / "metrics.json").read_text())["test"]["accuracy"] > 0.6
    bundles = [load_bundle(tmp_path / attempt / "models" / "keras_mlp") for attempt in ("a", "b")]
    assert bundles[0].meta["mlflow"]["run_id"] != bundles[1].meta["mlflow"]["run_id"]  # two runs, same numbers
