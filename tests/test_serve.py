"""Tests for soundstage.serve: ``soundstage serve`` answers real HTTP requests on the loopback with the
probabilities of ``soundstage predict``, refuses what it must with a 4xx naming the upload, keeps its
limits (bytes, seconds, time, concurrency) and goes on serving.

A tiny demo (3 classes x 6 clips of 2 s at 16 kHz) is trained once for the module (a random forest
and a small dense net) through ``soundstage.cli.main`` in a temporary project. The main server is the
real command in a subprocess (``python -m soundstage.cli serve``, its temporary files under a private
TMPDIR); the cases that need a model call held back (timeouts, a full queue) run ``create_app`` under
uvicorn in a thread, with the bundle's ``predict`` gated by an event.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import psutil
import pytest
import requests
import soundfile as sf
import yaml
from audio_fixtures import tone, truncate, write_tone

from soundstage import cli
from soundstage.bundle import load_bundle
from soundstage.config import ParamsError, validate_params
from soundstage.predict import predict_file
from soundstage.serve import ServeLimits, create_app, display_name
from soundstage.stream import iter_windows

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.xdist_group("serve")]

REPO = Path(__file__).resolve().parents[1]
SR = 16000
#: The subprocess server's limits: small enough to reach with small files.
MAX_MB, MAX_SECONDS, WINDOW, HOP = 1, 30, 4.0, 2.0


def tiny_params() -> dict:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"].update(name="servedemo", root="data/demo")
    p["demo"] = {"n_classes": 3, "clips_per_class": 6, "n_artists": 3, "duration": 2.0, "sample_rate": SR}
    p["sharding"] = {"n_shards": 1}
    p["process"]["sample_rate"] = SR
    p["split"]["ratios"] = {"train": 0.5, "val": 0.25, "test": 0.25}
    p["features"].update(n_fft=512, hop_length=128, n_mels=32, n_mfcc=13)
    p["train"]["models"] = ["random_forest", "keras_mlp"]
    p["augment"]["enabled"] = False
    p["random_forest"]["n_estimators"] = 20
    p["keras_mlp"].update(hidden=[16], epochs=3, patience=2, batch_size=8)
    p["mlflow"] = {"tracking_uri": None}
    return p


def run(*argv: str) -> None:
    assert cli.main(["--params", "params.yaml", *argv]) == 0, argv


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Demo → ingest → process → split → features → a forest and a dense net, in a temporary project."""
    root = tmp_path_factory.mktemp("serve-project")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        run("demo", "--out", "data/demo")
        run("ingest")
        run("process", "--shard", "0")
        run("split", "data/process/shards/000.csv")
        run("features", "--index", "data/process/shards/000.csv")
        run("features", "--table", "--inputs", "data/features/shards/000.parquet")
        for model in ("random_forest", "keras_mlp"):
            run("train", "--model", model, "--out-dir", f"models/{model}/folds/0", "--threads", "2")
    return root


@pytest.fixture(scope="module")
def forest(project) -> Path:
    return project / "models/random_forest/folds/0"


@pytest.fixture(scope="module")
def clips(project) -> list[Path]:
    """One demo clip of each class, then the rest (2 s WAVs)."""
    files = sorted((project / "data/demo").rglob("*.wav"))
    firsts = {f.parent.name: f for f in reversed(files)}
    return [*firsts.values(), *(f for f in files if f not in firsts.values())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, *, proc: subprocess.Popen | None = None, log: Path | None = None,
                 timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:] if log else ''}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"no healthy server at {url} after {timeout} s")


class Server:
    """A running ``soundstage serve``: its URL, process and private temporary folder."""

    def __init__(self, url: str, proc: subprocess.Popen, tmpdir: Path) -> None:
        self.url, self.proc, self.tmpdir = url, proc, tmpdir

    def post(self, path: Path | str, *, name: str | None = None, data: bytes | None = None,
             timeout: float = 120) -> requests.Response:
        body = Path(path).read_bytes() if data is None else data
        return requests.post(f"{self.url}/predict", files={"file": (name or Path(path).name, body)}, timeout=timeout)

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def leftovers(self) -> list[str]:
        """Files left in the server's upload folder (its only ``soundstage-serve-*`` folder)."""
        dirs = list(self.tmpdir.glob("soundstage-serve-*"))
        assert len(dirs) == 1, dirs
        return [p.name for p in dirs[0].iterdir()]


@pytest.fixture(scope="module")
def server(project, forest, tmp_path_factory) -> Server:
    """``soundstage serve`` on the forest, as a user starts it (no --host: the default binding)."""
    port = free_port()
    tmpdir = tmp_path_factory.mktemp("serve-tmp")
    log = tmpdir.parent / "serve.log"
    env = {**os.environ, "TMPDIR": str(tmpdir), "KERAS_BACKEND": "jax"}
    cmd = [sys.executable, "-m", "soundstage.cli", "serve", str(forest), "--port", str(port),
           "--max-upload-mb", str(MAX_MB), "--max-seconds", str(MAX_SECONDS), "--window", str(WINDOW),
           "--hop", str(HOP), "--concurrency", "2", "--queue", "8"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc=proc, log=log)
        yield Server(url, proc, tmpdir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # A clean stop (uvicorn re-raises the SIGTERM it handled) removes the upload folder.
    assert proc.returncode in (0, -15) and "Application shutdown complete" in log.read_text(), log.read_text()[-3000:]
    assert not list(tmpdir.glob("soundstage-serve-*"))


def cli_predict(bundle: Path, files: list[Path], capsys) -> dict[str, dict]:
    """``soundstage predict BUNDLE FILES --format json``: ``{file: row}``."""
    capsys.readouterr()
    assert cli.main(["predict", str(bundle), *map(str, files), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] == []
    return {row["file"]: row for row in out["predictions"]}


# ---------------------------------------------------------------------------------------------
# The real server


def test_health_and_labels(server, forest):
    health = requests.get(f"{server.url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["kind"] == "random_forest" and health["model"] == "random_forest"
    assert health["labels"] == 3 and health["uptime_seconds"] > 0
    assert health["limits"] == {"max_upload_mb": MAX_MB, "max_seconds": MAX_SECONDS, "timeout_seconds": 60,
                                "concurrency": 2, "queue": 8, "window_seconds": WINDOW, "hop_seconds": HOP}
    assert requests.get(f"{server.url}/labels", timeout=10).json() == {"labels": load_bundle(forest).labels}
    missing = requests.get(f"{server.url}/nowhere", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_binds_the_loopback_only_by_default(server):
    port = int(server.url.rsplit(":", 1)[1])
    listening = {c.laddr for c in psutil.Process(server.proc.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", port)}


def test_predictions_equal_soundstage_predict(server, forest, clips, tmp_path, capsys):
    """Every served format, and a name with spaces and accents, gets the CLI's probabilities."""
    y, _ = sf.read(clips[0], dtype="float32")
    files = list(clips[:3])
    for fmt, ext in (("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3"), ("AIFF", "aiff")):
        sf.write(tmp_path / f"clip.{ext}", y, SR, format=fmt)
        files.append(tmp_path / f"clip.{ext}")
    files.append(tmp_path / "ünï tone é (1).wav")
    sf.write(files[-1], y[::-1], SR, subtype="PCM_24")
    expected = cli_predict(forest, files, capsys)
    labels = load_bundle(forest).labels
    for f in files:
        r = server.post(f)
        assert r.status_code == 200, r.text
        got, want = r.json(), expected[str(f)]
        assert got["file"] == f.name and got["label"] == want["label"]
        assert list(got["probabilities"]) == labels
        np.testing.assert_allclose([got["probabilities"][lab] for lab in labels],
                                   [want[f"p_{lab}"] for lab in labels], rtol=0, atol=1e-6, err_msg=f.name)
        assert got["duration"] == pytest.approx(2.0, abs=0.03) and "windows" not in got  # shorter than a window
    # Clips of three classes get different answers: the comparison is not of constants.
    assert len({tuple(expected[str(f)][f"p_{lab}"] for lab in labels) for f in files[:3]}) > 1
    assert server.leftovers() == []


def test_a_long_upload_gets_its_windows(server, forest, clips, tmp_path):
    """A 10 s upload (five clips of three classes end to end): the windows of stream.iter_windows and
    the whole file's probabilities of predict_file."""
    y = np.concatenate([sf.read(c, dtype="float32")[0] for c in clips[:3] + clips[:2]])
    long = tmp_path / "long.wav"
    sf.write(long, y, SR, subtype="PCM_16")
    r = server.post(long)
    assert r.status_code == 200, r.text
    got = r.json()
    bundle = load_bundle(forest)
    np.testing.assert_allclose(list(got["probabilities"].values()), predict_file(bundle, long), rtol=0, atol=1e-6)
    assert got["duration"] == pytest.approx(10.0)
    expected = list(iter_windows(bundle, long, window=WINDOW, hop=HOP))
    assert [(w["start"], w["end"]) for w in got["windows"]] == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert [(w["start"], w["end"], w["label"]) for w in got["windows"]] == [(e.start, e.end, e.label)
                                                                            for e in expected]
    np.testing.assert_allclose([w["score"] for w in got["windows"]], [e.score for e in expected], atol=1e-6)


def bad_uploads(d: Path) -> dict[str, tuple[Path, int, str]]:
    """``{case: (file, status, error)}`` of every kind of bad upload (one field ``file`` each)."""
    d.mkdir(exist_ok=True)
    out = {}
    (d / "notes.wav").write_text("this is not audio\n" * 50)
    out["text as wav"] = (d / "notes.wav", 415, "not_audio")
    (d / "empty.wav").write_bytes(b"")
    out["empty"] = (d / "empty.wav", 422, "empty_file")
    full = write_tone(d / "full.wav", sr=SR, duration=1.0, subtype="PCM_16")
    out["truncated wav"] = (truncate(full, d / "cut.wav", fraction=0.5), 422, "truncated")
    flac = write_tone(d / "full.flac", sr=SR, duration=1.0, fmt="FLAC")
    out["truncated flac"] = (truncate(flac, d / "cut.flac", fraction=0.5), 422, "truncated")
    (d / "fake.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(500))
    out["m4a"] = (d / "fake.m4a", 415, "not_audio")
    out["caf"] = (write_tone(d / "tone.caf", sr=SR, duration=1.0, fmt="CAF", subtype="PCM_16"), 415,
                  "unsupported_format")
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR, subtype="PCM_16")
    out["silent"] = (d / "silent.wav", 422, "silent")
    y = tone(sr=SR, duration=1.0)
    y[100:103] = np.nan
    sf.write(d / "nan.wav", y, SR, subtype="FLOAT")
    out["nan samples"] = (d / "nan.wav", 422, "nonfinite")
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, SR * (MAX_SECONDS + 10)).astype(np.float32)
    sf.write(d / "long.ogg", noise, SR, format="OGG")  # ~100 KB: under the byte limit, over the seconds
    out["too long (header)"] = (d / "long.ogg", 413, "too_long")
    # A FLAC written as a stream states no length: counted while decoding, refused past the limit.
    quiet = (noise * 0.01).astype(np.float32)
    sf.write(d / "stream.flac", quiet, SR, format="FLAC", subtype="PCM_16")
    raw = bytearray((d / "stream.flac").read_bytes())
    raw[8 + 13] &= 0xF0
    raw[8 + 14: 8 + 18] = bytes(4)
    (d / "stream.flac").write_bytes(bytes(raw))
    assert sf.info(str(d / "stream.flac")).frames > 10**15 and len(raw) < MAX_MB << 20
    out["too long (counted)"] = (d / "stream.flac", 413, "too_long")
    (d / "big.wav").write_bytes(np.random.default_rng(1).bytes((MAX_MB << 20) + 1))
    out["too large"] = (d / "big.wav", 413, "too_large")
    return out


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, tuple[Path, int, str]]:
    return bad_uploads(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", ["text as wav", "empty", "truncated wav", "truncated flac", "m4a", "caf", "silent",
                                  "nan samples", "too long (header)", "too long (counted)", "too large"])
def test_a_bad_upload_gets_its_4xx_and_the_service_goes_on(server, bad, clips, case):
    path, status, error = bad[case]
    r = server.post(path)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error and f"'{path.name}'" in body["detail"]
    assert server.post(clips[0]).status_code == 200
    assert server.leftovers() == []


@pytest.mark.parametrize("case, request_kwargs, error, message", [
    ("no file field", {"files": {"audio": ("a.wav", b"RIFF")}}, "missing_file", "fields received: 'audio'"),
    ("text in the file field", {"files": {"file": (None, "hello")}}, "missing_file", "holds text"),
    ("no multipart body", {"data": b"RIFF....WAVE"}, "missing_file", "multipart/form-data"),
    ("no body", {}, "missing_file", "multipart/form-data"),
    ("body cut before the closing boundary",
     {"data": b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF',
      "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}}, "bad_form", "closing boundary"),
    ("garbage multipart", {"data": b"garbage", "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}},
     "bad_form", "malformed"),
])
def test_a_bad_request_gets_400_and_the_service_goes_on(server, clips, case, request_kwargs, error, message):
    r = requests.post(f"{server.url}/predict", timeout=30, **request_kwargs)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == error and message in r.json()["detail"], r.text
    assert server.post(clips[0]).status_code == 200
    assert server.leftovers() == []


def multipart(name: str, payload_chunks, boundary: str = "b0undary"):
    """A multipart body with one file field, yielded in pieces (requests sends it chunked)."""
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    yield from payload_chunks
    yield f"\r\n--{boundary}--\r\n".encode()


def test_an_oversized_upload_is_refused_without_holding_it(server, clips):
    """50 MB against a 1 MB limit, with a Content-Length and streamed without one: 413, and the server
    neither keeps it in memory nor on disk."""
    big = 50 << 20
    piece = np.random.default_rng(2).bytes(1 << 20)
    before = server.rss()
    r = server.post("huge.wav", data=piece * 50)  # requests states the Content-Length
    # Refused from its Content-Length, before the file's name is read.
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert int(re.search(r"\((\d+) bytes\)", r.json()["detail"])[1]) > big
    r = requests.post(f"{server.url}/predict", data=multipart("huge.wav", (piece for _ in range(50))), timeout=120,
                      headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413 and r.json()["error"] == "too_large" and "'huge.wav'" in r.json()["detail"]
    growth = server.rss() - before
    assert growth < 16 << 20, f"server memory grew by {growth / 2**20:.1f} MiB for a 50 MiB upload"
    assert server.leftovers() == []
    # An upload within the limit streamed the same way is predicted.
    ok = requests.post(f"{server.url}/predict", data=multipart("clip.wav", [clips[0].read_bytes()]), timeout=60,
                       headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert ok.status_code == 200 and ok.json()["file"] == "clip.wav"


def test_parallel_requests_get_the_sequential_answers(server, clips):
    files = clips[:8]
    sequential = [server.post(f).json() for f in files]
    with ThreadPoolExecutor(len(files)) as pool:  # 8 at once: 2 computing, the others queued (queue 8)
        parallel = list(pool.map(server.post, files))
    assert [r.status_code for r in parallel] == [200] * len(files)
    assert [r.json() for r in parallel] == sequential
    assert requests.get(f"{server.url}/health", timeout=10).json()["in_progress"] == 0


# ---------------------------------------------------------------------------------------------
# The application in a thread, its model call held back


class Gate:
    """Holds every model call until :meth:`open`; ``entered`` is set when one is waiting."""

    def __init__(self, bundle) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()
        inner = bundle.predict

        def predict(**kwargs):
            self.entered.set()
            assert self.opened.wait(120), "the gate was never opened"
            return inner(**kwargs)

        bundle.predict = predict

    def open(self) -> None:
        self.opened.set()


@contextlib.contextmanager
def thread_server(app):
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < end, "uvicorn did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(60)


def limits(**changes) -> ServeLimits:
    base = {"max_upload_mb": 1, "max_seconds": 30, "timeout_seconds": 60, "concurrency": 1, "queue": 0,
            "window_seconds": 4.0, "hop_seconds": 2.0}
    return ServeLimits.from_params(base | changes)


def post(url: str, path: Path, timeout: float = 120) -> requests.Response:
    return requests.post(f"{url}/predict", files={"file": (path.name, path.read_bytes())}, timeout=timeout)


def in_progress(url: str) -> int:
    return requests.get(f"{url}/health", timeout=10).json()["in_progress"]


def wait_for(condition, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def test_a_full_service_answers_503_with_retry_after(forest, clips):
    """concurrency 1 + queue 1: one request computing, one waiting, the third is refused at once."""
    bundle = load_bundle(forest)
    app = create_app(bundle, limits=limits(concurrency=1, queue=1))
    gate = Gate(bundle)
    with thread_server(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, clips[0])
        assert gate.entered.wait(60)
        second = pool.submit(post, url, clips[1])
        wait_for(lambda: in_progress(url) == 2)
        refused = post(url, clips[2])
        assert refused.status_code == 503 and refused.json()["error"] == "busy"
        assert int(refused.headers["Retry-After"]) >= 1
        gate.open()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert post(url, clips[2]).status_code == 200
        assert in_progress(url) == 0


def test_a_request_past_its_timeout_gets_504_and_the_work_keeps_its_slot(forest, clips):
    bundle = load_bundle(forest)
    app = create_app(bundle, limits=limits(timeout_seconds=3.0, concurrency=1, queue=0))
    gate = Gate(bundle)
    with thread_server(app) as url:
        r = post(url, clips[0])
        assert r.status_code == 504 and r.json()["error"] == "timeout" and clips[0].name in r.json()["detail"]
        # The model call still runs in its thread: it holds the only slot until it is done.
        assert gate.entered.is_set() and in_progress(url) == 1
        assert post(url, clips[1]).status_code == 503
        gate.open()
        wait_for(lambda: in_progress(url) == 0)
        assert post(url, clips[1]).status_code == 200
        assert list(app.state.upload_dir.iterdir()) == []
    assert not app.state.upload_dir.exists()  # removed when the application stops


def test_a_stalled_upload_gets_504(forest, clips):
    """A client that stops sending mid-body is answered at the timeout and its bytes are deleted."""
    app = create_app(load_bundle(forest), limits=limits(timeout_seconds=3.0, concurrency=1, queue=0))
    with thread_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        body = b"".join(multipart("slow.wav", [clips[0].read_bytes()]))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            answer = b""
            while b"}" not in answer:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 504") and b"connection: close" in head.lower()
        assert json.loads(payload)["error"] == "timeout" and "slow.wav" in json.loads(payload)["detail"]
        wait_for(lambda: in_progress(url) == 0)
        assert list(app.state.upload_dir.iterdir()) == []
        assert post(url, clips[0]).status_code == 200


def test_a_keras_bundle_answers_parallel_requests_as_predict_does(project, clips):
    """The dense net (one model call at a time), 6 requests at once on 2 slots."""
    bundle_dir = project / "models/keras_mlp/folds/0"
    app = create_app(bundle_dir, limits=limits(concurrency=2, queue=8))
    reference = load_bundle(bundle_dir)
    expected = [predict_file(reference, f) for f in clips[:6]]
    with thread_server(app) as url, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda f: post(url, f), clips[:6]))
    for r, want in zip(answers, expected):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(list(r.json()["probabilities"].values()), want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Starting: refused bundles, params and flags


def serve_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soundstage.cli", "serve", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "KERAS_BACKEND": "jax"})


def test_a_refused_bundle_stops_before_binding(forest, tmp_path):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in forest.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    meta = json.loads((tampered / "bundle.json").read_text())
    (tampered / "bundle.json").write_text(json.dumps({**meta, "loader": "evil.py"}))
    for bundle, message in ((tmp_path / "nothing", "not a soundstage model bundle"), (tampered, "'loader'")):
        port = free_port()
        proc = serve_cli([str(bundle), "--port", str(port)], cwd=tmp_path)
        assert proc.returncode == 1 and "soundstage serve: error:" in proc.stderr and message in proc.stderr, \
            proc.stderr[-2000:]
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass


def test_windows_the_bundle_would_reject_stop_the_start(project, forest):
    """A window shorter than the bundle's shortest clip is refused when the app is made."""
    bundle = load_bundle(forest)
    bundle.meta["process"]["duration"]["min_seconds"] = 1.0
    with pytest.raises(ValueError, match="serve.window_seconds"):
        create_app(bundle, limits=limits(window_seconds=0.5, hop_seconds=0.25))


@pytest.mark.parametrize("raw, shown", [
    ("clip.wav", "clip.wav"), ("../../etc/passwd", "passwd"), ("C:\\Users\\me\\clip 1.flac", "clip 1.flac"),
    ("a\x00b\r\nc.wav", "abc.wav"), ("", "upload"), ("../", "upload"), (b"\xc3\xbcn\xc3\xaf.wav", "ünï.wav"),
    ("x" * 300, "x" * 200),
])
def test_the_client_file_name_is_made_safe_to_echo(raw, shown):
    assert display_name(raw) == shown


def test_serve_params_validate_and_name_the_key():
    defaults = validate_params({})["serve"]
    assert defaults == {"host": "127.0.0.1", "port": 8000, "max_upload_mb": 20, "max_seconds": 600,
                        "timeout_seconds": 60, "concurrency": 2, "queue": 16, "window_seconds": 5.0,
                        "hop_seconds": 2.5}
    assert ServeLimits.from_params(defaults).max_upload_bytes == 20 << 20
    for change, key in (({"concurrency": 0}, "serve.concurrency"), ({"max_upload_mb": 0}, "serve.max_upload_mb"),
                        ({"port": 70000}, "serve.port"), ({"hots": "x"}, "serve.hots"),
                        ({"hop_seconds": 6.0}, "serve.hop_seconds"),
                        ({"timeout_seconds": -1}, "serve.timeout_seconds")):
        with pytest.raises(ParamsError) as err:
            validate_params({"serve": change})
        assert err.value.key == key, (change, str(err.value))
    for change, key in (({"concurrency": 0}, "serve.concurrency"), ({"hop_seconds": 9.0}, "serve.hop_seconds"),
                        ({"max_seconds": float("nan")}, "serve.max_seconds"), ({"queue": -1}, "serve.queue")):
        with pytest.raises(ValueError, match=key):
            ServeLimits.from_params(defaults | change)


def test_flags_override_params_yaml(tmp_path, monkeypatch):
    from soundstage import serve as serve_module

    calls = []
    monkeypatch.setattr(serve_module, "serve", lambda bundle, **kw: calls.append((bundle, kw)))
    monkeypatch.chdir(tmp_path)
    # No params.yaml: the schema's defaults.
    assert cli.main(["serve", "b"]) == 0
    assert calls[-1][1]["host"] == "127.0.0.1" and calls[-1][1]["port"] == 8000
    assert calls[-1][1]["limits"] == ServeLimits.from_params(validate_params({})["serve"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"serve": {"port": 9001, "concurrency": 3, "queue": 1}}))
    assert cli.main(["serve", "b", "--queue", "5", "--max-upload-mb", "0.5", "--window", "3", "--hop", "1"]) == 0
    _, kw = calls[-1]
    assert kw["port"] == 9001 and kw["limits"].concurrency == 3 and kw["limits"].queue == 5
    assert kw["limits"].max_upload_bytes == 1 << 19
    assert (kw["limits"].window_seconds, kw["limits"].hop_seconds) == (3.0, 1.0)
    assert cli.main(["serve", "b", "--hop", "9"]) == 1  # a hop longer than the window: an error naming the key


def test_the_benchmark_runs_in_quick_mode(forest, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_serve.py"), "--quick",
                           "--bundle", str(forest), "--json", str(tmp_path / "bench.json")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [level["concurrency"] for level in data["levels"]] == [1, 4]
    for level in data["levels"]:
        assert level["errors"] == 0 and level["requests"] > 0 and level["p50_ms"] <= level["p99_ms"]
