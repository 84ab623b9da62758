"""Tests for soundstage.stream: sliding-window predictions on long files and live streams.

A tiny project of three classes that are easy to tell apart (a harmonic tone, white noise, 3 kHz
beeps; 2 s clips at 22.05 kHz, processed at 16 kHz in 0.5 s segments) goes through the pipeline via
``soundstage.cli.main`` (ingest → process → split → features → stats → train RF, dense net and CNN).
Long inputs are built from those classes, so where each class starts is known.
"""

from __future__ import annotations

import io
import json
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from soundstage import cli
from soundstage.bundle import load_bundle
from soundstage.decode import AudioError
from soundstage.predict import predict_file
from soundstage.stream import (
    BLOCK_FRAMES,
    Event,
    WindowResult,
    aggregate,
    iter_windows,
    merge_events,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.xdist_group("stream")]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = ("random_forest", "keras_mlp", "keras_cnn")
CLASSES = ("beeps", "noise", "tone")  # the bundle's labels, sorted
SR = 22050  # the files' rate; the bundles process at 16 kHz, so every window is resampled


def signal(label: str, seconds: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """``seconds`` of class ``label``: float32 mono in [-1, 1]."""
    t = np.arange(round(seconds * sr)) / sr
    amp = rng.uniform(0.3, 0.8)
    if label == "tone":
        f0 = rng.uniform(250, 450)
        y = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    elif label == "noise":
        y = rng.standard_normal(t.size)
    else:
        y = np.sin(2 * np.pi * rng.uniform(2800, 3200) * t) * ((t * 8) % 1 < 0.5)
    y = y / np.max(np.abs(y)) * amp
    return y.astype(np.float32)


def to_int16(y: np.ndarray) -> np.ndarray:
    return np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)


def tiny_params() -> dict:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"].update(name="streamtest", root="data/raw")
    p["data"]["folder"]["group_regex"] = None
    p["sharding"] = {"n_shards": 2}
    p["process"]["sample_rate"] = 16000
    p["process"]["duration"] = {"mode": "segment", "seconds": 0.5, "hop_seconds": 0.25, "min_seconds": 0.1,
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
def project(tmp_path_factory) -> Path:
    """Clips of the three classes, and a bundle of each model kind trained on them."""
    root = tmp_path_factory.mktemp("stream")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    rng = np.random.default_rng(7)
    for label in CLASSES:
        for i in range(8):
            (root / "data/raw" / label).mkdir(parents=True, exist_ok=True)
            sf.write(root / f"data/raw/{label}/{label}_{i}.wav", to_int16(signal(label, 2.0, rng)), SR)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        run("ingest")
        shards = ["000", "001"]
        for k in range(2):
            run("process", "--shard", str(k))
        run("split", *(f"data/process/shards/{s}.csv" for s in shards))
        for s in shards:
            run("features", "--index", f"data/process/shards/{s}.csv")
        run("features", "--table", "--inputs", *(f"data/features/shards/{s}.parquet" for s in shards))
        run("stats", *(f"data/features/shards/{s}.parquet" for s in shards))
        for model in MODELS:
            run("train", "--model", model, "--out-dir", f"models/{model}", "--threads", "2")
    return root


@pytest.fixture(scope="module")
def bundles(project):
    out = {m: load_bundle(project / "models" / m) for m in MODELS}
    assert all(b.labels == list(CLASSES) for b in out.values())
    return out


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """30 s of stereo 16-bit WAV: 10 s tone, 10 s noise, 10 s beeps; and its int16 samples ``(n, 2)``."""
    rng = np.random.default_rng(99)
    mono = np.concatenate([signal(label, 10.0, rng) for label in ("tone", "noise", "beeps")])
    left, right = to_int16(mono), to_int16(mono * 0.9)
    frames = np.stack([left, right], axis=1)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, frames, SR, subtype="PCM_16")
    return path, frames


def wav_bytes(frames: np.ndarray, sr: int = SR, *, data_size: int | None = None, fmt: str = "WAV") -> bytes:
    """``frames`` as a WAV (or FLAC) file in memory; ``data_size`` overwrites the WAV's RIFF and data
    sizes as a program writing to a pipe does (sox: 0x7FFFF000, others 0 or 0xFFFFFFFF)."""
    buf = io.BytesIO()
    sf.write(buf, frames, sr, format=fmt, subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if data_size is not None:
        i = data.index(b"data")
        data[4:8] = struct.pack("<I", data_size)
        data[i + 4: i + 8] = struct.pack("<I", data_size)
    return bytes(data)


class Pipe(io.RawIOBase):
    """A non-seekable byte stream (what ``sys.stdin.buffer`` is on a pipe) that records every read's size."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.requests: list[int] = []
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buf) -> int:
        self.requests.append(len(buf))
        chunk = self._data.read(len(buf))
        buf[: len(chunk)] = chunk
        self.consumed += len(chunk)
        return len(chunk)


# ---------------------------------------------------------------------------------------------
# A window is predicted as a clip of its samples


@pytest.mark.parametrize("model", MODELS)
def test_window_equals_the_cut_clip_predicted_as_a_file(bundles, long_file, tmp_path, model):
    """Every window (the final partial one included) has the probabilities predict_file gives a file
    holding its samples: same chain, resampling from 22.05 to 16 kHz per window included."""
    bundle = bundles[model]
    _, frames = long_file
    # 4.3 s across the tone → noise boundary: 5 windows of 1 s every 0.7 s, then a partial 0.8 s tail.
    part = frames[round(7.5 * SR): round(7.5 * SR) + round(4.3 * SR)]
    src = tmp_path / "part.wav"
    sf.write(src, part, SR, subtype="PCM_16")
    results = list(iter_windows(bundle, src, window=1.0, hop=0.7))
    win, hop = round(1.0 * SR), round(0.7 * SR)
    n_full = 1 + (len(part) - win) // hop
    assert len(results) == n_full + 1  # the full windows, then the partial tail the bundle pads
    assert results[-1].end == pytest.approx(len(part) / SR)
    assert results[-1].end - results[-1].start < 1.0
    for k, res in enumerate(results):
        start = k * hop
        assert res.start == pytest.approx(start / SR) and res.end == pytest.approx(min(start + win, len(part)) / SR)
        clip = tmp_path / f"cut{k}.wav"
        sf.write(clip, part[start: start + win], SR, subtype="PCM_16")
        expected = predict_file(bundle, clip)
        np.testing.assert_allclose(res.probs, expected, atol=1e-6, rtol=0)
        assert res.label == CLASSES[int(np.argmax(expected))] and res.score == pytest.approx(expected.max())
        assert res.probs.shape == (len(CLASSES),)
    assert np.ptp([r.probs for r in results], axis=0).max() > 0.05  # the windows differ: a real comparison


# ---------------------------------------------------------------------------------------------
# Long files: windows and events


def test_windows_and_events_on_a_long_file(bundles, long_file):
    bundle = bundles["random_forest"]
    path, frames = long_file
    results = list(iter_windows(bundle, path, window=1.0, hop=0.5))
    assert len(results) == 59  # 30 s: starts 0, 0.5, ..., 29.0
    np.testing.assert_allclose([r.start for r in results], np.arange(59) * 0.5)
    np.testing.assert_allclose([r.end for r in results], np.arange(59) * 0.5 + 1.0)
    assert all(isinstance(r, WindowResult) for r in results)
    np.testing.assert_allclose([r.probs.sum() for r in results], 1.0, atol=1e-6)
    # Windows fully inside a segment get its class.
    for r in results:
        truth = ("tone", "noise", "beeps")[int(r.start // 10)]
        if int(r.start // 10) == int((r.end - 1e-9) // 10):
            assert r.label == truth, r

    events = merge_events(results, min_confidence=0.5)
    assert [e.label for e in events] == ["tone", "noise", "beeps"]
    assert all(isinstance(e, Event) for e in events)
    for e, (start, end) in zip(events, [(0, 10), (10, 20), (20, 30)], strict=True):
        assert abs(e.start - start) <= 1.0 and abs(e.end - end) <= 1.0, e
        assert 0.5 <= e.score <= 1.0

    clip = aggregate(results, bundle.labels)
    assert clip.shape == (3,) and clip.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(clip, np.mean([r.probs for r in results], axis=0))
    assert clip.min() > 0.2  # each class holds a third of the file


def test_merge_events_rules():
    def w(start, label, score):
        return WindowResult(start, start + 1.0, label, score, np.array([score, 1 - score]))

    seq = [w(0, "a", 0.9), w(0.5, "a", 0.7), w(1.0, "b", 0.8), w(1.5, "b", 0.3), w(2.0, "b", 0.9), w(5.0, "b", 0.9)]
    assert merge_events(seq) == [Event(0, 1.5, "a", pytest.approx(0.8)), Event(1.0, 3.0, "b", pytest.approx(2 / 3)),
                                 Event(5.0, 6.0, "b", 0.9)]  # a gap in time ends an event
    assert merge_events(seq, min_confidence=0.6) == [
        Event(0, 1.5, "a", pytest.approx(0.8)), Event(1.0, 2.0, "b", 0.8), Event(2.0, 3.0, "b", 0.9),
        Event(5.0, 6.0, "b", 0.9)]  # the low window belongs to no event and splits the b run
    assert merge_events([]) == []
    with pytest.raises(ValueError, match="min_confidence"):
        merge_events(seq, min_confidence=1.5)
    with pytest.raises(ValueError, match="no window"):
        aggregate([], ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        aggregate(seq, ["a", "b", "c"])


def test_silent_windows_are_skipped_and_reported(bundles, tmp_path):
    rng = np.random.default_rng(3)
    y = np.concatenate([signal("tone", 2.0, rng), np.zeros(2 * SR, np.float32), signal("noise", 2.0, rng)])
    path = tmp_path / "gap.wav"
    sf.write(path, to_int16(y), SR)
    skipped = []
    results = list(iter_windows(bundles["random_forest"], path, window=1.0, hop=1.0,
                                on_skip=lambda s, e, exc: skipped.append((s, e, exc.reason))))
    assert [r.start for r in results] == [0.0, 1.0, 4.0, 5.0]
    assert skipped == [(2.0, 3.0, "silent"), (3.0, 4.0, "silent")]


# ---------------------------------------------------------------------------------------------
# Streams: pipes, headers of unknown length, bounded reads


@pytest.mark.parametrize("data_size", [None, 0, 0xFFFFFFFF, 0x7FFFF000, 0x7FFFFF00],
                         ids=["exact", "0", "ffffffff", "sox", "arecord"])
def test_a_pipe_gives_the_windows_of_the_file(bundles, long_file, data_size):
    """WAV headers from a pipe (length unknown: 0, 0xFFFFFFFF, sox's 0x7FFFF000, arecord's 0x7FFFFF00)
    and a FLAC stream read through a non-seekable object give the windows of the file on disk."""
    bundle = bundles["random_forest"]
    _, frames = long_file
    part = frames[: 6 * SR]
    expected = list(iter_windows(bundle, io.BytesIO(wav_bytes(part)), window=1.0, hop=0.5))
    got = list(iter_windows(bundle, Pipe(wav_bytes(part, data_size=data_size)), window=1.0, hop=0.5))
    assert [(r.start, r.end, r.label) for r in got] == [(r.start, r.end, r.label) for r in expected]
    np.testing.assert_array_equal([r.probs for r in got], [r.probs for r in expected])
    if data_size is None:
        flac = list(iter_windows(bundle, Pipe(wav_bytes(part, fmt="FLAC")), window=1.0, hop=0.5))
        np.testing.assert_array_equal([r.probs for r in flac], [r.probs for r in expected])


def test_reads_are_bounded_and_windows_come_before_the_end(bundles, tmp_path):
    """Memory stays flat: no read asks for more than a block, and the first window is predicted after
    reading about one window of a 10-minute input, not all of it."""
    rng = np.random.default_rng(5)
    minutes = 10
    y = np.tile(signal("tone", 5.0, rng), 12 * minutes)
    pipe = Pipe(wav_bytes(to_int16(y), data_size=0))
    size = len(pipe._data.getbuffer())
    bound = BLOCK_FRAMES * 4  # one block of mono float32: the most libsndfile may ask for at once
    consumed_at = []
    for k, _ in enumerate(iter_windows(bundles["random_forest"], pipe, window=2.0, hop=2.0)):
        consumed_at.append(pipe.consumed)
        if k == 2:
            break
    assert max(pipe.requests) <= bound
    assert consumed_at[0] <= 44 + 2 * (2.0 * SR) + 65536  # the header, one window of int16, a read ahead
    assert consumed_at[2] < size / 50


def test_stdin_stream_through_the_cli_prints_each_window_as_it_completes(project, long_file):
    """``soundstage predict B - --window 1 --hop 0.5`` in a real subprocess, fed like `sox ... -t wav -`
    (a header with a length of 0): the first window's row comes out before the rest is written."""
    _, frames = long_file
    part = frames[: 5 * SR]
    data = wav_bytes(part, data_size=0)
    first = 44 + 2 * 2 * round(1.6 * SR)  # the header and 1.6 s: the first window (0-1 s) is complete
    bundle = project / "models/random_forest"
    proc = subprocess.Popen([str(BIN / "soundstage"), "predict", str(bundle), "-", "--window", "1", "--hop", "0.5",
                             "--format", "csv", "--timing"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(data[:first])
        proc.stdin.flush()
        lines = []
        deadline = time.monotonic() + 120
        while len(lines) < 2 and time.monotonic() < deadline:  # the CSV header, then the first window
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line.decode())
        assert len(lines) == 2, (lines, proc.poll())
        assert proc.poll() is None  # still waiting for the rest of the stream
        assert lines[0].strip() == "file,start,end,label,score,kind,latency_ms"
        cells = lines[1].strip().split(",")
        assert cells[:3] == ["-", "0.000000", "1.000000"] and cells[5] == "window"
        rest, err = proc.communicate(data[first:], timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    table = pd.read_csv(io.StringIO(lines[0] + lines[1] + rest.decode()))
    windows = table[table["kind"] == "window"]
    assert len(windows) == 9  # 5 s: starts 0 .. 4.0 every 0.5 s
    np.testing.assert_allclose(windows["start"], np.arange(9) * 0.5)
    assert (windows["label"] == "tone").all()
    assert (windows["latency_ms"] > 0).all()
    clip = table[table["kind"] == "clip"]
    assert len(clip) == 1 and clip["label"].iloc[0] == "tone"
    assert "latency p50" in err.decode() and "p99" in err.decode()


# ---------------------------------------------------------------------------------------------
# Command line formats


def test_cli_audacity_events_parse(project, long_file, capsys):
    path, _ = long_file
    bundle = str(project / "models/random_forest")
    assert cli.main(["predict", bundle, str(path), "--window", "1", "--hop", "0.5", "--format", "audacity",
                     "--events", "--min-confidence", "0.5"]) == 0
    captured = capsys.readouterr()
    rows = [line.split("\t") for line in captured.out.splitlines()]
    assert rows and all(len(r) == 3 for r in rows)
    starts, ends = [float(r[0]) for r in rows], [float(r[1]) for r in rows]
    assert all(s < e for s, e in zip(starts, ends, strict=True)) and starts == sorted(starts)
    assert [r[2] for r in rows] == ["tone", "noise", "beeps"]
    assert str(path) in captured.err  # the clip-level line goes to stderr, out of the label track


def test_cli_json_lines_and_table(project, long_file, tmp_path, capsys):
    _, frames = long_file
    path = tmp_path / "three.wav"
    sf.write(path, frames[: 3 * SR], SR, subtype="PCM_16")
    bundle = str(project / "models/keras_mlp")
    assert cli.main(["predict", bundle, str(path), "--window", "1", "--format", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in records] == ["window", "window", "window", "clip"]
    assert [r["start"] for r in records[:3]] == [0.0, 1.0, 2.0]  # --hop defaults to --window
    assert set(records[0]["probs"]) == set(CLASSES)
    mean = np.mean([[r["probs"][c] for c in CLASSES] for r in records[:3]], axis=0)
    np.testing.assert_allclose([records[3]["probs"][c] for c in CLASSES], mean, atol=1e-9)

    assert cli.main(["predict", bundle, str(path), "--window", "1", "--hop", "0.5", "--timing"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == ["file", "start", "end", "label", "score", "latency_ms"]
    assert len(lines) == 1 + 5 + 1 and "clip: mean of 5 windows" in lines[-1]
    assert "latency p50" in out.err


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture
def bad_inputs(tmp_path, long_file) -> dict[str, Path]:
    _, frames = long_file
    files = {"text": tmp_path / "notes.wav", "empty": tmp_path / "empty.wav", "truncated": tmp_path / "cut.wav",
             "short": tmp_path / "short.wav", "missing": tmp_path / "gone.wav", "folder": tmp_path / "folder.wav",
             "nan": tmp_path / "nan.wav"}
    files["text"].write_text("this is not audio\n" * 50)
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(wav_bytes(frames[: 4 * SR])[: 44 + 2 * 2 * round(2.5 * SR)])
    sf.write(files["short"], frames[: SR // 2], SR)
    files["folder"].mkdir()
    y = frames[: 4 * SR, 0] / 32768
    y[round(2.5 * SR)] = np.nan
    sf.write(files["nan"], y, SR, subtype="FLOAT")
    return files


@pytest.mark.parametrize(("name", "reason", "windows"), [
    ("text", "not_audio", 0), ("empty", "empty_file", 0), ("truncated", "truncated", 2), ("short", "too_short", 0),
    ("missing", "not_found", 0), ("folder", "unreadable", 0), ("nan", "nonfinite", 2)])
def test_bad_inputs_raise_an_audio_error_naming_them(bundles, bad_inputs, name, reason, windows):
    got: list[WindowResult] = []
    with pytest.raises(AudioError) as exc:
        for r in iter_windows(bundles["random_forest"], bad_inputs[name], window=1.0, hop=1.0):
            got.append(r)
    assert exc.value.reason == reason
    assert str(bad_inputs[name]) in str(exc.value)
    assert len(got) == windows  # the complete windows before the problem come first


def test_bad_stream_objects(bundles):
    for data, reason in ((b"", "empty_file"), (b"RIFF\x00\x00\x00\x00WAVEjunk" * 20, "not_audio")):
        with pytest.raises(AudioError, match=reason) as exc:
            list(iter_windows(bundles["random_forest"], Pipe(data), window=1.0, hop=1.0))
        assert "<stream>" in str(exc.value)


@pytest.mark.parametrize(("window", "hop", "match"), [
    (0.0, 0.5, "window must be"), (-1.0, 0.5, "window must be"), (float("nan"), 0.5, "window must be"),
    (1.0, 0.0, "hop must be"), (1.0, -0.5, "hop must be"), (1.0, 1.5, "must not be longer than window"),
    (0.05, 0.05, "shorter than the 0.1 s")])
def test_bad_window_parameters(bundles, long_file, window, hop, match):
    path, _ = long_file
    with pytest.raises(ValueError, match=match):
        iter_windows(bundles["random_forest"], path, window=window, hop=hop)  # when called, not when read


def test_cli_errors(project, bad_inputs, long_file, capsys):
    bundle = str(project / "models/random_forest")
    path, _ = long_file
    assert cli.main(["predict", bundle, str(path), "--window", "0"]) == 1
    assert "window must be" in capsys.readouterr().err
    assert cli.main(["predict", bundle, str(path), "--window", "1", "--hop", "2"]) == 1
    assert "must not be longer than window" in capsys.readouterr().err
    assert cli.main(["predict", bundle, "-", "--hop", "1"]) == 1
    assert "needs --window" in capsys.readouterr().err
    # A bad file is reported and the others are predicted.
    assert cli.main(["predict", bundle, str(bad_inputs["text"]), str(bad_inputs["short"]), str(path),
                     "--window", "1", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(io.StringIO(captured.out))
    assert set(table["file"]) == {str(path)}
    assert str(bad_inputs["text"]) in captured.err and "not_audio" in captured.err
    assert str(bad_inputs["short"]) in captured.err and "shorter than one window" in captured.err
    # Nothing predicted: exit 1.
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", bundle, str(bad_inputs["empty"]), "--window", "1"])
    assert exc.value.code == 1
