"""Tests of soundstage.process: processed outputs, rejections, segmentation and the per-clip cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from audio_fixtures import make_bad_files, tone, write_array, write_tone

import soundstage.process as process_mod
from soundstage.dsp import ProcessConfig
from soundstage.ingest import ingest
from soundstage.process import INDEX_COLUMNS, process_shard

EXTS = ["wav", "flac", "ogg", "mp3", "au", "aiff"]


def config(**kw) -> ProcessConfig:
    d = {"sample_rate": 16000, "mono": True, "trim": {"enabled": True, "top_db": 40.0},
         "normalize": {"enabled": True, "method": "peak", "target_db": -1.0},
         "duration": {"mode": "none", "seconds": 1.0, "hop_seconds": 0.5, "min_seconds": 0.1, "short": "pad"}}
    for key, value in kw.items():
        if isinstance(value, dict):
            d[key] = {**d.get(key, {}), **value}
        else:
            d[key] = value
    return ProcessConfig.from_dict(d)


def manifest_of(root: Path, **kw) -> pd.DataFrame:
    manifest, _ = ingest(root=root, extensions=EXTS, n_shards=1, **kw)
    return manifest


def run(manifest: pd.DataFrame, out: Path, cfg: ProcessConfig | None = None, **kw):
    return process_shard(manifest=manifest, out_dir=out, config=cfg or config(), shard=0, **kw)


def with_silence(path: Path, *, sr: int, channels: int = 1, lead: float = 0.3, body: float = 0.4, **kw) -> Path:
    y = np.concatenate([np.zeros((round(lead * sr), channels), np.float32),
                        tone(sr=sr, channels=channels, duration=body, amplitude=0.2)])
    return write_array(path, y.T, sr=sr, **kw)


def test_processed_outputs(tmp_path: Path) -> None:
    root = tmp_path / "raw data"
    with_silence(root / "a" / "stereo 22k.wav", sr=22050, channels=2, subtype="PCM_16")
    write_tone(root / "a" / "mono 44k.flac", sr=44100, duration=0.3, fmt="FLAC", amplitude=0.1)
    write_tone(root / "b" / "ünï 8k.au", sr=8000, channels=3, duration=0.5, fmt="AU", subtype="PCM_16")
    manifest = manifest_of(root)
    index, rejected = run(manifest, tmp_path / "out", relative_to=tmp_path, progress=True)
    assert rejected.empty
    assert list(index.columns) == [*INDEX_COLUMNS, "stamp"]  # the stamp is for the cache
    assert index["id"].tolist() == manifest["id"].tolist() == index["clip_id"].tolist()
    assert index["group"].tolist() == index["clip_id"].tolist()  # no groups: the clip is its group
    for row in index.to_dict("records"):
        assert not Path(row["path"]).is_absolute() and row["path"] == f"out/audio/{row['id']}.wav"
        info = sf.info(tmp_path / row["path"])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "FLOAT", "WAV")
        y, _ = sf.read(tmp_path / row["path"], dtype="float32")
        assert np.abs(y).max() == pytest.approx(10 ** (-1 / 20), rel=1e-4)  # peak normalized to -1 dBFS
        assert row["duration"] == pytest.approx(len(y) / 16000) and row["sample_rate"] == 16000
        assert row["start"] == 0.0 and row["key"]
    durations = dict(zip(index["id"], index["duration"]))
    assert durations["a/stereo 22k"] < 0.5  # 0.3 s of leading silence trimmed from 0.7 s
    assert durations["b/ünï 8k"] == pytest.approx(0.5, abs=0.05)


def test_rejections_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    files = make_bad_files(root / "cls")
    shutil.rmtree(root / "cls" / "_full")
    manifest = manifest_of(root)  # the cases probing catches are gone already
    index, rejected = run(manifest, tmp_path / "out")
    expected = {files[n].path: files[n].reason for n in ("nan_float_wav", "inf_float_wav", "silent_wav",
                                                       "shorter_than_10ms", "truncated_flac")}  # a cut MP3: at ingest
    got = dict(zip(rejected["path"].map(Path), rejected["reason"]))
    assert got == expected
    assert set(rejected["stage"]) == {"process"}
    for row in rejected.to_dict("records"):
        assert row["path"] in row["detail"], row  # silent/too_short too, though preprocess has no path
        assert row["id"] in set(manifest["id"])
    assert index["clip_id"].tolist() == ["cls/sous-dossier é/ünïcødé tone 音 (1)"]
    assert {p.name for p in (tmp_path / "out" / "audio").rglob("*.wav")} == {"ünïcødé tone 音 (1).wav"}


def test_too_short_with_short_reject(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_tone(root / "c" / "half.wav", duration=0.5)
    write_tone(root / "c" / "long.wav", duration=1.2)
    cfg = config(duration={"mode": "fixed", "seconds": 1.0, "short": "reject"})
    index, rejected = run(manifest_of(root), tmp_path / "out", cfg)
    assert index["id"].tolist() == ["c/long"] and index["duration"].tolist() == [1.0]
    assert rejected["reason"].tolist() == ["too_short"] and "half.wav" in rejected["detail"][0]


def test_params_impossible_for_one_clip_reject_it(tmp_path: Path) -> None:
    # native rate kept: a 3 kHz low-pass is fine at 16 kHz but above Nyquist of an 4 kHz-rate clip
    root = tmp_path / "raw"
    write_tone(root / "c" / "ok.wav", sr=16000, duration=0.3)
    write_tone(root / "c" / "narrow.wav", sr=4000, duration=0.3)
    cfg = config(sample_rate=None, filter={"enabled": True, "kind": "lowpass", "cutoff": [3000.0], "order": 2})
    index, rejected = run(manifest_of(root), tmp_path / "out", cfg)
    assert index["id"].tolist() == ["c/ok"] and index["sample_rate"].tolist() == [16000]
    assert rejected["reason"].tolist() == ["cannot_process"]
    assert "narrow.wav" in rejected["detail"][0] and "Nyquist" in rejected["detail"][0]


def test_segmentation_keeps_clip_as_group(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_tone(root / "c" / "spk1_long.wav", duration=2.2)
    write_tone(root / "c" / "solo.wav", duration=1.4)
    with pytest.warns(UserWarning, match="does not match 1 of the 2 files"):  # solo has no speaker: its own group
        manifest = manifest_of(root, group_regex=r"(?P<group>spk\d)_")
    cfg = config(trim={"enabled": False}, duration={"mode": "segment", "seconds": 1.0, "hop_seconds": 0.5})
    index, rejected = run(manifest, tmp_path / "out", cfg)
    assert rejected.empty
    long = index[index["clip_id"] == "c/spk1_long"]
    # three full windows, then the tail from 1.5 s (0.7 s of audio) as one padded window
    assert long["id"].tolist() == [f"c/spk1_long__s{k}" for k in range(4)]
    assert long["start"].tolist() == [0.0, 0.5, 1.0, 1.5]
    assert set(long["group"]) == {"spk1"}
    solo = index[index["clip_id"] == "c/solo"]
    assert solo["id"].tolist() == ["c/solo__s0", "c/solo__s1"]  # one full window + padded tail
    assert set(solo["group"]) == {"c/solo"}
    assert index["duration"].tolist() == [1.0] * 6
    for p in index["path"]:
        assert sf.info(p).frames == 16000


def test_multichannel_when_mono_is_off(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_tone(root / "c" / "quad.flac", sr=22050, channels=4, duration=0.6, fmt="FLAC")
    write_tone(root / "c" / "mono.wav", sr=16000, channels=1, duration=0.6)
    index, rejected = run(manifest_of(root), tmp_path / "out", config(mono=False, trim={"enabled": False}))
    assert rejected.empty
    rows = index.set_index("id")
    info = sf.info(rows.loc["c/quad", "path"])
    assert (info.channels, info.samplerate, info.frames) == (4, 16000, round(0.6 * 16000))
    assert rows.loc["c/quad", "duration"] == pytest.approx(0.6, abs=1e-3)
    assert sf.info(rows.loc["c/mono", "path"]).channels == 1
    y, _ = sf.read(rows.loc["c/quad", "path"])
    peak_freqs = [np.argmax(np.abs(np.fft.rfft(y[:, c]))) / 0.6 for c in range(4)]
    assert peak_freqs == pytest.approx([300, 400, 500, 600], abs=5)  # channel order kept


# ---------------------------------------------------------------------------------------------
# The per-clip cache


@pytest.fixture
def counted_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = process_mod.load_audio

    def load(path, **kwargs):
        calls.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(process_mod, "load_audio", load)
    return calls


def test_cache_reuses_reprocesses_and_cleans(tmp_path: Path, counted_loads: list[str], advised: list[str]) -> None:
    root = tmp_path / "raw"
    paths = [write_tone(root / "c" / f"{k}.wav", duration=2.2, freq=300 + 50 * k) for k in range(3)]
    out = tmp_path / "out"
    cfg = config(duration={"mode": "segment", "seconds": 1.0, "hop_seconds": 1.0, "min_seconds": 0.1})
    manifest = manifest_of(root)
    first, _ = run(manifest, out, cfg, relative_to=tmp_path)
    assert len(counted_loads) == 3 and len(first) == 9
    assert advised == [os.path.realpath(p) for p in counted_loads]  # every file read ahead, in order

    # unchanged: nothing decoded, nothing read ahead, same rows (label changes are picked up)
    counted_loads.clear()
    advised.clear()
    relabelled = manifest.assign(label=["x", "c", "c"])
    second, _ = run(relabelled, out, cfg, previous=first, relative_to=tmp_path)
    assert counted_loads == [] and advised == []
    pd.testing.assert_frame_equal(second.drop(columns="label"), first.drop(columns="label"))
    assert second.groupby("clip_id")["label"].first().to_dict() == {"c/0": "x", "c/1": "c", "c/2": "c"}

    # one file rewritten shorter (and its mtime moves): only it is decoded; its stale segment goes
    write_tone(paths[1], duration=1.2, freq=350)
    os.utime(paths[1], ns=(10**18, 10**18))
    manifest = manifest_of(root)
    third, _ = run(manifest, out, cfg, previous=second, relative_to=tmp_path)
    assert counted_loads == [str(paths[1])] and advised == [os.path.realpath(paths[1])]
    assert third[third["clip_id"] == "c/1"]["id"].tolist() == ["c/1__s0", "c/1__s1"]
    assert not (out / "audio" / "c" / "1__s2.wav").exists()

    # a clip that left the shard loses its files; the others are kept
    counted_loads.clear()
    fourth, _ = run(manifest[manifest["id"] != "c/2"], out, cfg, previous=third, relative_to=tmp_path)
    assert counted_loads == [] and set(fourth["clip_id"]) == {"c/0", "c/1"}
    assert sorted(p.name for p in (out / "audio" / "c").iterdir()) == [
        "0__s0.wav", "0__s1.wav", "0__s2.wav", "1__s0.wav", "1__s1.wav"]

    # a deleted output is re-made; changed params re-process everything
    (out / "audio" / "c" / "0__s0.wav").unlink()
    run(manifest, out, cfg, previous=fourth, relative_to=tmp_path)
    assert counted_loads == [str(paths[0]), str(paths[2])]
    counted_loads.clear()
    run(manifest, out, config(), previous=fourth, relative_to=tmp_path)
    assert len(counted_loads) == 3


def test_clip_moved_to_another_shard_keeps_its_files(tmp_path: Path, counted_loads: list[str]) -> None:
    root = tmp_path / "raw"
    for k in range(4):
        write_tone(root / "c" / f"{k}.wav", duration=0.3)
    out = tmp_path / "out"
    manifest = manifest_of(root)  # all in shard 0
    first, _ = run(manifest, out)
    moved = manifest.assign(shard=[0, 0, 1, 1])  # n_shards changed: shard 1 now owns c/2 and c/3
    counted_loads.clear()
    zero, _ = process_shard(manifest=moved, out_dir=out, config=config(), shard=0, previous=first)
    assert counted_loads == [] and zero["clip_id"].tolist() == ["c/0", "c/1"]
    assert all((out / "audio" / "c" / f"{k}.wav").is_file() for k in range(4))
    one, _ = process_shard(manifest=moved, out_dir=out, config=config(), shard=1)
    assert one["clip_id"].tolist() == ["c/2", "c/3"] and set(one["shard"]) == {1}


def test_audio_rewritten_by_a_killed_run_is_never_reused(tmp_path: Path, monkeypatch) -> None:
    """16 kHz -> 8 kHz (killed after 2 clips) -> 16 kHz: the 2 files rewritten at 8 kHz are processed
    again, although the cache's key matches and the files exist."""
    root = tmp_path / "raw"
    for k in range(5):
        write_tone(root / "c" / f"{k}.wav", sr=16000, duration=0.4, freq=300 + 40 * k)
    out, manifest = tmp_path / "out", manifest_of(root)
    first, _ = run(manifest, out)
    real_preprocess = process_mod.preprocess
    calls = []

    def preprocess_then_die(y, *, sr, config):
        if len(calls) == 2:
            raise KeyboardInterrupt  # SIGKILL, as far as the files are concerned
        calls.append(1)
        return real_preprocess(y, sr=sr, config=config)

    with monkeypatch.context() as m:
        m.setattr(process_mod, "preprocess", preprocess_then_die)
        with pytest.raises(KeyboardInterrupt):
            run(manifest, out, config(sample_rate=8000), previous=first)
    rates = sorted(sf.info(out / "audio" / "c" / f"{k}.wav").samplerate for k in range(5))
    assert rates == [8000, 8000, 16000, 16000, 16000]
    again, _ = run(manifest, out, previous=first)
    assert {sf.info(out / "audio" / "c" / f"{k}.wav").samplerate for k in range(5)} == {16000}
    pd.testing.assert_frame_equal(again.drop(columns="stamp"), first.drop(columns="stamp"))


def test_a_killed_shard_keeps_its_checkpointed_work(tmp_path: Path, monkeypatch, counted_loads: list[str]) -> None:
    root = tmp_path / "raw"
    for k in range(5):
        write_tone(root / "c" / f"{k}.wav", duration=0.3, freq=300 + 40 * k)
    manifest = manifest_of(root)
    clean, _ = run(manifest, tmp_path / "clean", relative_to=tmp_path)
    monkeypatch.setattr(process_mod, "CHECKPOINT_SECONDS", 0.0)
    saved: list[pd.DataFrame] = []
    real_preprocess = process_mod.preprocess

    def preprocess_then_die(y, *, sr, config):
        if len(saved) == 3:
            raise KeyboardInterrupt
        return real_preprocess(y, sr=sr, config=config)

    with monkeypatch.context() as m:
        m.setattr(process_mod, "preprocess", preprocess_then_die)
        with pytest.raises(KeyboardInterrupt):
            run(manifest, tmp_path / "out", relative_to=tmp_path, checkpoint=saved.append)
    counted_loads.clear()
    index, _ = run(manifest, tmp_path / "out", previous=saved[-1], relative_to=tmp_path)
    assert len(counted_loads) == 2  # 3 clips done before the kill are reused
    fresh = index.drop(columns="stamp").assign(path=lambda f: f["path"].str.replace("out/", "clean/"))
    pd.testing.assert_frame_equal(fresh, clean.drop(columns="stamp"))
