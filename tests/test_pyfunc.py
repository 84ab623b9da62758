"""Tests for soundstage.pyfunc and soundstage.registry: every trained model is also an MLflow pyfunc
model (``runs:/<id>/pipeline``) that gives, from audio bytes or paths, exactly what ``soundstage predict``
gives; a real ``mlflow models serve`` answers base64 audio of every format; ``soundstage promote`` sets
``champion`` and ``soundstage predict models:/<name>@champion`` uses it.

A tiny demo (3 classes x 6 clips of 1.5 s at 16 kHz) goes through every stage via ``soundstage.cli.main``
in a temporary project, MLflow in a temporary SQLite store; the forest, the dense net and the CNN are
trained (a few seconds each) and evaluated (the val metrics promote chooses by).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from soundstage import cli
from soundstage.predict import predict

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.xdist_group("pyfunc")]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = ("random_forest", "keras_mlp", "keras_cnn")
NAME = "pyfuncdemo"
N_SHARDS = 2


def tiny_params() -> dict:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"].update(name=NAME, root="data/demo")
    p["demo"] = {"n_classes": 3, "clips_per_class": 6, "n_artists": 3, "duration": 1.5, "sample_rate": 16000}
    p["sharding"] = {"n_shards": N_SHARDS}
    p["process"]["sample_rate"] = 16000
    p["split"]["ratios"] = {"train": 0.5, "val": 0.25, "test": 0.25}
    p["features"].update(n_fft=512, hop_length=128, n_mels=32, n_mfcc=13)
    p["train"]["models"] = list(MODELS)
    p["augment"]["enabled"] = False
    p["random_forest"]["n_estimators"] = 20
    p["keras_mlp"].update(hidden=[16], epochs=4, patience=2, batch_size=8)
    p["keras_cnn"].update(crop_frames=32, crops_per_clip=2, filters=[4, 8], epochs=2, patience=1, batch_size=8)
    p["mlflow"] = {"tracking_uri": None}
    return p


def run(*argv: str) -> None:
    assert cli.main(["--params", "params.yaml", *argv]) == 0, argv


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The pipeline, stage by stage, in a temporary project; returns its folder, the store and each model's run."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
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
    runs = {m: json.loads((root / f"models/{m}/folds/0/bundle.json").read_text())["mlflow"]["run_id"] for m in MODELS}
    return {"root": root, "uri": uri, "runs": runs}


@pytest.fixture
def mlflow_uri(project):
    import mlflow

    mlflow.set_tracking_uri(project["uri"])
    mlflow.set_registry_uri(project["uri"])
    return project["uri"]


@pytest.fixture(scope="module")
def files(project) -> list[str]:
    """One source file per class (absolute paths, as ingest found them)."""
    manifest = pd.read_csv(project["root"] / "data/ingest/manifest.csv")
    return manifest.groupby("label")["path"].first().tolist()


@pytest.fixture(scope="module")
def formats(project, files, tmp_path_factory) -> dict[str, Path]:
    """The first file as WAV (itself), FLAC, OGG/Vorbis and, where libsndfile writes it, MP3."""
    out = tmp_path_factory.mktemp("formats")
    y, sr = sf.read(files[0], dtype="float32")
    paths = {"wav": Path(files[0])}
    for ext, fmt, subtype in (("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")):
        if fmt in sf.available_formats() and subtype in sf.available_subtypes(fmt):
            sf.write(out / f"clip.{ext}", y, sr, format=fmt, subtype=subtype)
            paths[ext] = out / f"clip.{ext}"
    return paths


def expected_table(project, model: str, paths: list) -> pd.DataFrame:
    """What ``soundstage predict`` gives for ``paths`` (all predictable) with the model's bundle."""
    table, errors = predict(bundle_dir=project["root"] / "models" / model / "folds" / "0",
                            files=[str(p) for p in paths])
    assert errors == []
    return table


def p_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("p_")]


# ------------------------------------------------------------------ the logged model


@pytest.mark.parametrize("model", MODELS)
def test_every_training_run_logs_and_registers_its_pipeline_from_code(project, mlflow_uri, model):
    import mlflow

    from soundstage.pyfunc import pip_requirements

    client = mlflow.MlflowClient()
    run_id = project["runs"][model]
    outputs = {client.get_logged_model(o.model_id).name for o in client.get_run(run_id).outputs.model_outputs}
    assert outputs == {"model", "pipeline"}
    (version,) = [v for v in client.search_model_versions(f"name = '{NAME}'") if v.run_id == run_id]
    assert version.status == "READY"
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/pipeline"))
    meta = yaml.safe_load((local / "MLmodel").read_text())
    flavor = meta["flavors"]["python_function"]
    # A model from code: MLflow stores our entry file and the bundle, no pickle of our objects.
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (local / "_pyfunc_entry.py").read_text() == (REPO / "src/soundstage/_pyfunc_entry.py").read_text()
    assert not list(local.rglob("*.pkl"))
    bundle = local / flavor["artifacts"]["bundle"]["path"]
    assert json.loads((bundle / "bundle.json").read_text())["mlflow"]["run_id"] == run_id
    inputs = json.loads(meta["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [("audio", "binary"), ("path", "string")]
    # Pinned from the installed packages, not inferred (MLflow would load the model in a subprocess).
    reqs = (local / "requirements.txt").read_text().split()
    assert reqs == pip_requirements() and all("==" in r for r in reqs) and any(r.startswith("librosa==") for r in reqs)
    example = json.loads((local / "serving_input_example.json").read_text())
    wav = base64.b64decode(example["dataframe_split"]["data"][0][0])
    assert wav[:4] == b"RIFF" and sf.info(io.BytesIO(wav)).duration >= 1.0


# ------------------------------------------------------------------ (a) in process


@pytest.mark.parametrize("model", MODELS)
def test_pyfunc_gives_soundstage_predict_probabilities_from_bytes_and_paths(project, mlflow_uri, files, model):
    import mlflow

    pyfunc = mlflow.pyfunc.load_model(f"runs:/{project['runs'][model]}/pipeline")
    expected = expected_table(project, model, files)
    cols = p_columns(expected)
    for column, values in (("audio", [Path(f).read_bytes() for f in files]), ("path", files)):
        out = pyfunc.predict(pd.DataFrame({column: values}))
        assert list(out.columns) == ["label", *cols, "error"]
        np.testing.assert_allclose(out[cols].to_numpy(), expected[cols].to_numpy(), atol=1e-6, rtol=0)
        assert out["label"].tolist() == expected["label"].tolist()
        assert out["error"].isna().all()
    assert expected[cols].std(axis=0).max() > 1e-3  # the files get different probabilities: a real check


def test_a_bad_row_gets_an_error_and_the_others_are_predicted(project, mlflow_uri, files, tmp_path):
    import mlflow

    pyfunc = mlflow.pyfunc.load_model(f"runs:/{project['runs']['random_forest']}/pipeline")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    good = Path(files[1]).read_bytes()
    rows = pd.DataFrame({
        "audio": [good, np.random.default_rng(0).bytes(4000), None, None, None, good[:60], None],
        "path": [None, "garbage.wav", files[0], str(tmp_path / "gone.wav"), str(silent), None, None],
    })
    out = pyfunc.predict(rows)
    assert len(out) == len(rows)
    expected = expected_table(project, "random_forest", [files[1], files[0]])
    cols = p_columns(expected)
    np.testing.assert_allclose(out.loc[[0, 2], cols].to_numpy(), expected[cols].to_numpy(), atol=1e-6, rtol=0)
    assert out.loc[[0, 2], "label"].tolist() == expected["label"].tolist()
    assert out.loc[[0, 2], "error"].isna().all()
    bad = out.drop(index=[0, 2])
    assert bad["label"].isna().all() and bad[cols].isna().all().all()
    errors = bad["error"].tolist()
    assert "garbage.wav" in errors[0] and "[not_audio]" in errors[0]  # named by its path, not a temporary file
    assert str(tmp_path / "gone.wav") in errors[1] and "[not_found]" in errors[1]
    assert "[silent]" in errors[2]
    assert "row 5" in errors[3] and "[" in errors[3]  # a WAV header cut short
    assert "row 6" in errors[4] and "neither" in errors[4]


# ------------------------------------------------------------------ (b) mlflow models serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(project):
    """``mlflow models serve`` of the CNN's pipeline on 127.0.0.1, killed (its process group) afterwards."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": project["uri"], "KERAS_BACKEND": "jax",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(project["root"] / "serve.log", "wb")  # noqa: SIM115 - closed below
    model = f"runs:/{project['runs']['keras_cnn']}/pipeline"
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port)],
                            cwd=project["root"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow models serve did not start:\n"
                                     f"{(project['root'] / 'serve.log').read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def invoke(url: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        return json.loads(resp.read())


def served(url: str, rows: list[list]) -> pd.DataFrame:
    body = {"dataframe_split": {"columns": ["audio", "path"], "data": rows}}
    out = pd.DataFrame(invoke(url, body)["predictions"])
    assert len(out) == len(rows)
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_served_pipeline_answers_base64_wav_flac_ogg_and_isolates_a_bad_row(project, server, formats):
    names = [k for k in ("wav", "flac", "ogg") if k in formats]
    assert names == ["wav", "flac", "ogg"]
    rows = [[b64(formats[k].read_bytes()), None] for k in names]
    rows.insert(1, [b64(b"not audio at all\n" * 200), None])  # garbage bytes
    # A path on the server's side: MLflow's server base64-decodes every cell of a binary column, null
    # included (a 400), so a row without audio sends "" (no bytes).
    rows.append(["", str(formats["wav"])])
    out = served(server, rows)
    bad = out.iloc[1]
    assert bad["label"] is None and "[not_audio]" in bad["error"] and "row 1" in bad["error"]
    expected = expected_table(project, "keras_cnn", [formats[k] for k in [*names, "wav"]])
    cols = p_columns(expected)
    assert np.isnan(bad[cols].to_numpy(float)).all()
    good = out.drop(index=1)
    np.testing.assert_allclose(good[cols].to_numpy(float), expected[cols].to_numpy(), atol=1e-6, rtol=0)
    assert good["label"].tolist() == expected["label"].tolist() and good["error"].isna().all()


def test_served_pipeline_answers_base64_mp3(project, server, formats):
    if "mp3" not in formats:
        pytest.skip("this libsndfile has no MP3 encoder")
    out = served(server, [[b64(formats["mp3"].read_bytes()), None]])
    expected = expected_table(project, "keras_cnn", [formats["mp3"]])
    cols = p_columns(expected)
    np.testing.assert_allclose(out[cols].to_numpy(float), expected[cols].to_numpy(), atol=1e-6, rtol=0)
    assert out["label"].tolist() == expected["label"].tolist() and out["error"].isna().all()


# ------------------------------------------------------------------ (c) promote, models:/ references


def test_promote_sets_champion_on_the_best_version_and_predict_uses_it(project, mlflow_uri, files, tmp_path,
                                                                       monkeypatch, capsys):
    import mlflow

    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert sorted(v.run_id for v in versions) == sorted(project["runs"].values())
    scores = {int(v.version): client.get_run(v.run_id).data.metrics["val_macro_f1"] for v in versions}
    best = max(scores, key=lambda v: (scores[v], v))

    # The CLI outside the project: the store from MLFLOW_TRACKING_URI, the name from --name.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project["uri"])
    assert cli.main(["promote", "--name", NAME]) == 0
    assert f"{NAME} version {best} " in capsys.readouterr().out
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert int(champion.version) == best
    model = next(m for m, r in project["runs"].items() if r == champion.run_id)

    expected = expected_table(project, model, files[:2])
    assert cli.main(["predict", f"models:/{NAME}@champion", *files[:2], "--format", "json"]) == 0
    got = pd.DataFrame(json.loads(capsys.readouterr().out)["predictions"])
    assert got["file"].tolist() == files[:2]
    np.testing.assert_allclose(got[p_columns(expected)].to_numpy(), expected[p_columns(expected)].to_numpy(),
                               rtol=1e-12)
    for ref in (f"models:/{NAME}/{best}", f"runs:/{champion.run_id}/pipeline", f"runs:/{champion.run_id}/bundle"):
        assert cli.main(["predict", ref, files[0], "--format", "csv"]) == 0, ref
        assert pd.read_csv(io.StringIO(capsys.readouterr().out))["label"][0] == expected["label"][0]
    assert not list(Path(tmp_path).iterdir())  # nothing downloaded or created here (no ./mlflow.db either)


def test_serve_takes_a_models_reference(project, mlflow_uri, tmp_path, monkeypatch):
    """`soundstage serve models:/<name>/<version>` serves that version's bundle, downloaded for as long as
    it serves and removed after."""
    import mlflow

    from soundstage import serve as serve_module

    version = mlflow.MlflowClient().search_model_versions(f"name = '{NAME}'")[0]
    seen = {}

    def fake_serve(bundle, *, host, port, limits):
        seen.update(bundle=Path(bundle), meta=json.loads((Path(bundle) / "bundle.json").read_text()), host=host)

    monkeypatch.setattr(serve_module, "serve", fake_serve)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project["uri"])
    assert cli.main(["serve", f"models:/{NAME}/{version.version}", "--port", "0"]) == 0
    run_model = next(m for m, r in project["runs"].items() if r == version.run_id)
    assert seen["meta"]["model"] == run_model and seen["host"] == "127.0.0.1"
    assert not seen["bundle"].exists()  # the download is gone once the service stops
    assert cli.main(["serve", f"models:/{NAME}@nosuch"]) == 1


@pytest.mark.parametrize("ref, message", [
    (f"models:/{NAME}@nosuch", "alias nosuch not found"),
    (f"models:/{NAME}/99", "version=99"),
    ("models:/nosuchmodel@champion", "nosuchmodel"),
    ("runs:/0123456789abcdef0123456789abcdef/pipeline", "0123456789abcdef0123456789abcdef not found"),
    ("RUN/model", "not a soundstage pipeline model"),  # the bare model of a run: no bundle in it
    ("RUN/nothing", "nothing"),
])
def test_predict_with_a_bad_model_reference_gives_a_clear_error(project, files, tmp_path, monkeypatch, capsys,
                                                                ref, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project["uri"])
    ref = ref.replace("RUN", f"runs:/{project['runs']['keras_mlp']}")
    assert cli.main(["predict", ref, files[0]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("soundstage predict: error: ") and ref in err and message in err
