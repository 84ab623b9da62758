"""A model bundle is data: loading or predicting with a crafted one never runs code.

Every payload here is generated in ``tmp_path`` and, if it ran, would write a marker file (or import a
module that writes one); each test checks that the marker does not exist afterwards. Where it helps,
a control first shows the payload is live (it does run once its type is trusted explicitly).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest
import soundfile as sf

from soundstage import cli
from soundstage import models as M
from soundstage.bundle import FORMAT, load_bundle, save_bundle
from soundstage.features import clip_features
from soundstage.features_core import FeatureConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

SR = 8000
PROCESS = {"sample_rate": SR}
FEATURES = {"n_fft": 256, "hop_length": 64, "n_mels": 16, "n_mfcc": 8, "chroma": False, "n_bands": 4,
            "spectral": ["centroid"], "summary": ["mean", "std"]}
LABELS = ["a", "b"]


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """The file a payload writes if it runs."""
    return tmp_path / "PAYLOAD_RAN"


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    """One second of a 440 Hz tone: a file ``predict`` can decode and featurize."""
    t = np.arange(SR) / SR
    path = tmp_path / "tone.wav"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), SR)
    return path


def feature_columns() -> list[str]:
    """The summary columns ``FEATURES`` produce (what ``predict`` computes for a file)."""
    _, summary = clip_features(np.zeros(SR, np.float32) + 0.1, sr=SR, config=FeatureConfig.from_dict(FEATURES))
    return list(summary)


def meta_of(kind: str, **extra) -> dict:
    return {"format": FORMAT, "model": kind, "kind": kind, "labels": LABELS, "feature_columns": feature_columns(),
            "process": PROCESS, "features": FEATURES, **extra}


# ------------------------------------------------------------------ crafted skops trees


def value(v) -> dict:
    """A skops node holding a JSON value."""
    return {"__class__": type(v).__name__, "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(v), "is_json": True}


def call(module: str, name: str, *args: dict) -> dict:
    """A skops node that calls ``module.name(*args)`` when constructed."""
    return {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
            "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                        "content": list(args)}}


def write_skops(path: Path, tree: dict, **members: bytes) -> Path:
    from skops.io._protocol import PROTOCOL

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("schema.json", json.dumps({**tree, "protocol": PROTOCOL}))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def rf_bundle(directory: Path, tree: dict, **members: bytes) -> Path:
    write_skops(directory / "model.skops", tree, **members)
    (directory / "bundle.json").write_text(json.dumps(meta_of("random_forest")))
    return directory


def assert_live(path: Path, trusted: list[str], marker: Path) -> None:
    """Control: trusting the payload's types explicitly does run it (so the tests below test something)."""
    import skops.io as sio

    sio.load(path, trusted=trusted)
    assert marker.exists()
    marker.unlink()


def test_a_skops_tree_calling_a_numpy_writer_is_refused(tmp_path, marker, wav, capsys):
    """The observed attack: ``soundstage predict`` on a model.skops whose tree calls numpy.savetxt."""
    bundle = rf_bundle(tmp_path / "bundle", call("numpy", "savetxt", value(str(marker)), value([1.0, 2.0])))
    assert_live(bundle / "model.skops", ["numpy.savetxt"], marker)

    assert cli.main(["predict", str(bundle), str(wav)]) == 1
    err = capsys.readouterr().err
    assert "numpy.savetxt" in err and str(bundle / "model.skops") in err
    with pytest.raises(ValueError, match=r"numpy\.savetxt"):
        load_bundle(bundle).model
    with pytest.raises(ValueError, match=r"numpy\.savetxt"):
        M.load_model(bundle, kind="random_forest")
    assert not marker.exists()


def test_a_pickle_beside_the_model_that_the_tree_would_load_is_refused(tmp_path, marker, wav):
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    pkl = bundle / "weights.pkl"
    pkl.write_bytes(pickle.dumps(Payload()))
    rf_bundle(bundle, call("numpy", "load", value(str(pkl)), value(None), value(True)))
    assert_live(bundle / "model.skops", ["numpy.load"], marker)

    with pytest.raises(ValueError, match=r"numpy\.load"):
        load_bundle(bundle).model
    table, errors = None, None
    with pytest.raises(ValueError, match=r"numpy\.load"):
        from soundstage.predict import predict

        table, errors = predict(bundle_dir=bundle, files=[wav])
    assert table is None and errors is None
    assert not marker.exists()


def test_a_model_file_that_is_a_pickle_is_refused(tmp_path, marker):
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.skops").write_bytes(pickle.dumps(Payload()))
    (bundle / "bundle.json").write_text(json.dumps(meta_of("random_forest")))
    with pytest.raises(ValueError, match=r"model\.skops.*not a skops"):
        load_bundle(bundle).model
    assert not marker.exists()


def test_a_pickled_array_inside_the_skops_archive_is_refused(tmp_path, marker):
    """An object array is a pickle: skops reads arrays with ``allow_pickle=False``."""
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import io

    buf = io.BytesIO()
    np.save(buf, np.array([Payload()], dtype=object), allow_pickle=True)
    tree = {"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode", "type": "numpy",
            "file": "payload.npy"}
    bundle = rf_bundle(tmp_path / "bundle", tree, **{"payload.npy": buf.getvalue()})
    with pytest.raises(ValueError, match=r"model\.skops"):
        load_bundle(bundle).model
    assert not marker.exists()


def test_a_skops_tree_naming_a_foreign_module_does_not_import_it(tmp_path, marker, monkeypatch):
    """skops imports the module of a loss node while auditing: such a tree is refused before that."""
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tree = {"__class__": "Loss", "__module__": "evil_module", "__loader__": "LossNode",
            "__reduce__": {"args": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                                    "content": []}},
            "content": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {},
                        "key_types": {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                                      "content": []}}}
    bundle = rf_bundle(tmp_path / "bundle", tree)
    with pytest.raises(ValueError, match="evil_module"):
        load_bundle(bundle).model
    assert not marker.exists()
    assert "evil_module" not in sys.modules


# ------------------------------------------------------------------ bundle.json names no files


@pytest.mark.parametrize("field", ["model_file", "weights", "path"])
@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_bundle_json_naming_a_model_file_is_refused_and_the_file_never_opened(tmp_path, marker, field, where):
    evil = write_skops(tmp_path / "elsewhere" / "evil.skops",
                       call("numpy", "savetxt", value(str(marker)), value([1.0])))
    bundle = tmp_path / "project" / "models" / "rf"
    X = np.random.default_rng(0).normal(size=(20, len(feature_columns())))
    rf = M.fit_random_forest(X, np.arange(20) % 2, n_estimators=2, seed=0)
    save_bundle(bundle, model=rf, meta=meta_of("random_forest"))
    named = os.path.relpath(evil, bundle) if where == "relative" else str(evil)
    meta = json.loads((bundle / "bundle.json").read_text())
    meta[field] = named
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"bundle\.json.*{field}"):
        load_bundle(bundle).model
    assert not marker.exists()


@pytest.mark.parametrize(("change", "field"), [
    ({"model": "../../elsewhere/evil"}, "model"),
    ({"kind": "../../elsewhere/evil.skops"}, "kind"),
    ({"features": {**FEATURES, "weights": "/elsewhere/evil.skops"}}, "features"),
])
def test_bundle_json_paths_in_known_fields_are_refused(tmp_path, change, field):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "model.skops").write_bytes(b"")
    (bundle / "bundle.json").write_text(json.dumps({**meta_of("random_forest"), **change}))
    with pytest.raises(ValueError, match=rf"bundle\.json.*{field}"):
        load_bundle(bundle)


# ------------------------------------------------------------------ absurd sizes


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def test_an_absurdly_large_bundle_json_is_refused_without_reading_it(tmp_path):
    bundle = tmp_path / "b"
    sparse(bundle / "bundle.json", 65 << 20)
    (bundle / "model.skops").write_bytes(b"")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"bundle\.json.*bytes"):
        load_bundle(bundle)
    assert time.perf_counter() - t0 < 2.0


def test_an_absurdly_large_model_file_is_refused_without_reading_it(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps(meta_of("random_forest")))
    sparse(bundle / "model.skops", 3 << 30)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"model\.skops.*bytes"):
        load_bundle(bundle)
    with pytest.raises(ValueError, match=r"model\.skops.*bytes"):
        M.load_model(bundle, kind="random_forest")
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("kind", ["random_forest", "keras_mlp"])
def test_a_model_archive_that_expands_beyond_the_cap_is_refused(tmp_path, monkeypatch, kind):
    """A zip bomb: small on disk, huge once decompressed."""
    monkeypatch.setattr(M, "MAX_MODEL_BYTES", 1 << 20)
    path = tmp_path / "b" / M.MODEL_FILENAMES[kind]
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("schema.json" if kind == "random_forest" else "config.json", "{}")
        zf.writestr("zeros.npy", bytes(8 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match="expand"):
        M.load_model(path.parent, kind=kind)


@pytest.mark.parametrize(("field", "values"), [
    ("labels", [f"c{i}" for i in range(200_001)]),
    ("feature_columns", [f"f{i}" for i in range(200_001)]),
])
def test_absurdly_long_lists_in_bundle_json_are_refused(tmp_path, field, values):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "model.skops").write_bytes(b"")
    (bundle / "bundle.json").write_text(json.dumps({**meta_of("random_forest"), field: values}))
    with pytest.raises(ValueError, match=rf"bundle\.json.*{field}.*200001"):
        load_bundle(bundle)


# ------------------------------------------------------------------ Keras


def keras_bundle(directory: Path, model) -> Path:
    n = len(feature_columns())
    save_bundle(directory, model=model, meta=meta_of("keras_mlp", standardizer={"mean": [0.0] * n, "std": [1.0] * n}))
    return directory


def test_a_keras_model_with_a_lambda_layer_is_refused_without_running_it(tmp_path, marker):
    import keras

    # A Python lambda is stored as bytecode: the one kind of Lambda that runs code from the file.
    path = str(marker)
    payload = keras.layers.Lambda(lambda x: (open(path, "w").close(), x)[1])
    inputs = keras.Input((len(feature_columns()),))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(payload(inputs)))
    bundle = keras_bundle(tmp_path / "b", model)
    marker.unlink()  # building the model called the lambda once
    keras.saving.load_model(bundle / "model.keras", compile=False, safe_mode=False)  # control: loading runs it
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match=r"model\.keras.*Lambda"):
        load_bundle(bundle).model
    assert not marker.exists()


def rewrite_config(path: Path, edit) -> None:
    """Apply ``edit`` to the ``config.json`` of the Keras archive at ``path``."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize(("obj", "named"), [
    ({"module": "os", "class_name": "system", "config": "touch {marker}", "registered_name": None}, "os.system"),
    ({"module": None, "class_name": "Custom>Payload", "config": {}, "registered_name": "Custom>Payload"},
     "Custom>Payload"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {}, "registered_name": "Custom>Dense"},
     "Custom>Dense"),
])
def test_a_keras_config_naming_foreign_objects_is_refused(tmp_path, marker, obj, named):
    bundle = keras_bundle(tmp_path / "b", M.build_mlp(n_features=len(feature_columns()), n_classes=2, hidden=(4,)))

    def edit(config):
        o = json.loads(json.dumps(obj).replace("{marker}", str(marker)))
        config["config"]["layers"][1]["config"]["activation"] = o

    rewrite_config(bundle / "model.keras", edit)
    with pytest.raises(ValueError, match=rf"model\.keras.*{named}"):
        load_bundle(bundle).model
    assert not marker.exists()


# ------------------------------------------------------------------ the trusted lists stay exact


def test_trusted_skops_types_are_exactly_those_project_forests_need():
    """Forests over the params ``params.yaml`` allows: the list holds every type they need, and no other."""
    import skops.io as sio

    rng = np.random.default_rng(0)
    needed: set[str] = set()
    grid = itertools.product([2, 3, 11], ["balanced", "balanced_subsample", None], [None, 3],
                             ["sqrt", "log2", None, 2, 0.5], [1, 2], [np.float32, np.float64])
    for n_classes, class_weight, max_depth, max_features, min_samples_leaf, dtype in grid:
        y = np.arange(44) % n_classes
        X = (rng.normal(size=(44, 5)) + y[:, None]).astype(dtype)
        rf = M.fit_random_forest(X, y, n_estimators=2, max_depth=max_depth, max_features=max_features,
                                 class_weight=class_weight, min_samples_leaf=min_samples_leaf, seed=0)
        needed |= set(sio.get_untrusted_types(data=sio.dumps(rf)))
    assert needed <= set(M.TRUSTED_SKOPS_TYPES), f"add to models.TRUSTED_SKOPS_TYPES: {sorted(needed)}"
    assert set(M.TRUSTED_SKOPS_TYPES) <= needed, "models.TRUSTED_SKOPS_TYPES lists types no forest needs"


@pytest.mark.integration  # librosa's JIT / Keras models: seconds each
def test_trusted_keras_objects_are_exactly_those_project_networks_hold(tmp_path):
    """Trained MLPs and CNNs (compiled, so their optimizer is in the file) over their param variations."""
    rng = np.random.default_rng(0)
    y = np.arange(16) % 2
    X = rng.normal(size=(16, 3)).astype(np.float32)
    specs = [rng.normal(size=(8, 12)).astype(np.float32) for _ in range(8)]
    paths = []
    for i, (dropout, l2) in enumerate(itertools.product([0.0, 0.3], [0.0, 0.01])):
        mlp, _ = M.fit_keras_mlp(X, y, X[:4], y[:4], n_classes=2, hidden=(4, 3), dropout=dropout, l2=l2,
                                 batch_size=8, epochs=1, patience=1, seed=0)
        paths.append(M.save_model(mlp, tmp_path / f"mlp{i}", kind="keras_mlp"))
    for i, (dropout, stride) in enumerate(itertools.product([0.0, 0.3], [1, 2])):
        cnn, _ = M.fit_keras_cnn(specs, y[:8], None, None, n_classes=2, crop_frames=8, filters=(2, 3),
                                 dropout=dropout, first_stride=stride, batch_size=4, epochs=1, patience=1, seed=0,
                                 spec_augment_params={"freq_masks": 1, "freq_width": 2, "time_masks": 1,
                                                      "time_width": 2})
        paths.append(M.save_model(cnn, tmp_path / f"cnn{i}", kind="keras_cnn"))
    needed: set[str] = set()
    for path in paths:
        with zipfile.ZipFile(path) as zf:
            needed |= M.keras_objects(json.loads(zf.read("config.json")))
    assert needed <= set(M.TRUSTED_KERAS_OBJECTS), f"add to models.TRUSTED_KERAS_OBJECTS: {sorted(needed)}"
    assert set(M.TRUSTED_KERAS_OBJECTS) <= needed, "models.TRUSTED_KERAS_OBJECTS lists objects no model holds"
