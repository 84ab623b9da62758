"""Tests of soundstage.process: processed outputs, rejections, segmentation and the per-clip cache.

Processed segments live in per-shard stores (``<out>/audio/000.npy``, ``000-<c>ch.npy`` for
``c``-channel segments with ``mono: false``), located by the index rows' ``store, offset, frames``;
each row's ``path`` is the source file the segment was cut from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audio_fixtures import make_bad_files, tone, write_array, write_tone

import soundstage.process as process_mod
from soundstage.decode import downmix_frames, load_audio
from soundstage.dsp import ProcessConfig, preprocess
from soundstage.ingest import ingest
from soundstage.io import file_stamp, read_csv, write_csv, write_wav
from soundstage.process import INDEX_COLUMNS, process_shard, read_index, read_segment
from soundstage.store import STORE_COLUMNS, Stores, open_store

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


def roundtrip(table: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """What the next run gets as ``previous``: the cache written (as the CLI does) and read back."""
    path = tmp_path / "cache.csv"
    write_csv(path, table)
    return read_csv(path)


def segments(out: Path, index: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each segment's samples (mono float32, copied out of the stores), by segment id."""
    stores = Stores(out / "audio")
    return {row["id"]: read_segment(stores, row) for row in index.to_dict("records")}


def in_memory(path: str | Path, cfg: ProcessConfig) -> list[np.ndarray]:
    """The segments of one file processed in memory (decode + :func:`soundstage.dsp.preprocess`)."""
    y, sr = load_audio(path, mono=cfg.mono)
    return [seg.audio for seg in preprocess(y, sr=sr, config=cfg)[0]]


def stored(out: Path) -> list[str]:
    """The files under ``out/audio`` (parts included), relative."""
    folder = out / "audio"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def store_shape(out: Path, name: str = "000") -> tuple[int, ...]:
    return open_store(out / "audio" / f"{name}.npy").shape


def assert_contiguous(index: pd.DataFrame, out: Path, name: str = "000") -> None:
    """The rows of store ``name`` are its blocks one after another, and nothing else is in it."""
    rows = index[index["store"] == name]
    offsets = np.concatenate([[0], np.cumsum(rows["frames"].to_numpy())[:-1]])
    assert rows["offset"].tolist() == offsets.tolist()
    assert store_shape(out, name)[0] == int(rows["frames"].sum())


def assert_same_samples(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Bit-for-bit identical samples of the same segments."""
    assert sorted(got) == sorted(want)
    for seg_id, y in want.items():
        assert got[seg_id].dtype == y.dtype and got[seg_id].shape == y.shape, seg_id
        assert got[seg_id].tobytes() == y.tobytes(), seg_id


def write_wav_at(path: Path, samples: np.ndarray) -> Path:
    """A processed segment as the stage wrote it before stores (float32 WAV, 16 kHz)."""
    write_wav(path, samples, 16000)
    return path


class Killed(BaseException):
    """What SIGKILL does to a shard job, as far as its files are concerned: it stops where it is."""


def test_processed_outputs(tmp_path: Path) -> None:
    """Every clip becomes one row naming its source file and a block of the shard's store holding
    the float32 samples of the in-memory pipeline bit for bit (16 kHz, mono, trimmed, -1 dBFS)."""
    root = tmp_path / "raw data"
    with_silence(root / "a" / "stereo 22k.wav", sr=22050, channels=2, subtype="PCM_16")
    write_tone(root / "a" / "mono 44k.flac", sr=44100, duration=0.3, fmt="FLAC", amplitude=0.1)
    write_tone(root / "b" / "ünï 8k.au", sr=8000, channels=3, duration=0.5, fmt="AU", subtype="PCM_16")
    manifest = manifest_of(root)
    out = tmp_path / "out"
    index, rejected = run(manifest, out, relative_to=tmp_path, progress=True)
    assert rejected.empty
    assert list(index.columns) == [*INDEX_COLUMNS, "stamp"]  # the stamp is for the cache
    assert set(STORE_COLUMNS) <= set(INDEX_COLUMNS)
    assert index["id"].tolist() == manifest["id"].tolist() == index["clip_id"].tolist()
    assert index["group"].tolist() == index["clip_id"].tolist()  # no groups: the clip is its group
    assert index["path"].tolist() == manifest["path"].tolist()  # the source files, not processed copies
    assert set(index["store"]) == {"000"} and stored(out) == ["000.npy"]  # one store, no part left
    assert_contiguous(index, out)
    assert store_shape(out) == (int(index["frames"].sum()), 1) and open_store(out / "audio" / "000.npy").dtype == "<f4"
    got = segments(out, index)
    for row in index.to_dict("records"):
        y = got[row["id"]]
        assert y.dtype == np.float32 and y.shape == (row["frames"],)
        [want] = in_memory(row["path"], config())
        assert y.tobytes() == want.tobytes()  # lossless with respect to the in-memory pipeline
        assert np.abs(y).max() == pytest.approx(10 ** (-1 / 20), rel=1e-4)  # peak normalized to -1 dBFS
        assert row["duration"] == pytest.approx(len(y) / 16000) and row["sample_rate"] == 16000
        assert row["start"] == 0.0 and row["key"] and row["stamp"] == file_stamp(out / "audio" / "000.npy")
    durations = dict(zip(index["id"], index["duration"]))
    assert durations["a/stereo 22k"] < 0.5  # 0.3 s of leading silence trimmed from 0.7 s
    assert durations["b/ünï 8k"] == pytest.approx(0.5, abs=0.05)
    # the stage's table, as the CLI writes it, reads back with read_index
    write_csv(out / "shards" / "000.csv", index.drop(columns="stamp"))
    table = read_index(out)
    assert list(table.columns) == INDEX_COLUMNS and table["store"].tolist() == ["000"] * 3
    assert_same_samples(segments(out, table), got)
    assert read_index(out, n_shards=0).empty


def test_rejections_name_the_file(tmp_path: Path) -> None:
    """Each unusable clip becomes one rejected row naming its file and reason; only the good clip
    reaches the store."""
    root = tmp_path / "bad"
    files = make_bad_files(root / "cls")
    shutil.rmtree(root / "cls" / "_full")
    manifest = manifest_of(root)  # the cases probing catches are gone already
    out = tmp_path / "out"
    index, rejected = run(manifest, out)
    expected = {files[n].path: files[n].reason for n in ("nan_float_wav", "inf_float_wav", "silent_wav",
                                                       "shorter_than_10ms", "truncated_flac")}  # a cut MP3: at ingest
    got = dict(zip(rejected["path"].map(Path), rejected["reason"]))
    assert got == expected
    assert set(rejected["stage"]) == {"process"}
    for row in rejected.to_dict("records"):
        assert row["path"] in row["detail"], row  # silent/too_short too, though preprocess has no path
        assert row["id"] in set(manifest["id"])
    assert index["clip_id"].tolist() == ["cls/sous-dossier é/ünïcødé tone 音 (1)"]
    assert Path(index["path"][0]).name == "ünïcødé tone 音 (1).wav"
    assert stored(out) == ["000.npy"] and store_shape(out) == (index["frames"][0], 1)


def test_too_short_with_short_reject(tmp_path: Path) -> None:
    """``short: reject`` rejects a clip shorter than ``duration.seconds`` as too_short."""
    root = tmp_path / "raw"
    write_tone(root / "c" / "half.wav", duration=0.5)
    write_tone(root / "c" / "long.wav", duration=1.2)
    cfg = config(duration={"mode": "fixed", "seconds": 1.0, "short": "reject"})
    out = tmp_path / "out"
    index, rejected = run(manifest_of(root), out, cfg)
    assert index["id"].tolist() == ["c/long"] and index["duration"].tolist() == [1.0]
    assert index["frames"].tolist() == [16000] and store_shape(out) == (16000, 1)
    assert rejected["reason"].tolist() == ["too_short"] and "half.wav" in rejected["detail"][0]


def test_params_impossible_for_one_clip_reject_it(tmp_path: Path) -> None:
    """Native rate kept: a 3 kHz low-pass is fine at 16 kHz but above Nyquist of a 4 kHz-rate clip,
    which alone is rejected (cannot_process)."""
    root = tmp_path / "raw"
    write_tone(root / "c" / "ok.wav", sr=16000, duration=0.3)
    write_tone(root / "c" / "narrow.wav", sr=4000, duration=0.3)
    cfg = config(sample_rate=None, filter={"enabled": True, "kind": "lowpass", "cutoff": [3000.0], "order": 2})
    index, rejected = run(manifest_of(root), tmp_path / "out", cfg)
    assert index["id"].tolist() == ["c/ok"] and index["sample_rate"].tolist() == [16000]
    assert rejected["reason"].tolist() == ["cannot_process"]
    assert "narrow.wav" in rejected["detail"][0] and "Nyquist" in rejected["detail"][0]


def test_segmentation_keeps_clip_as_group(tmp_path: Path) -> None:
    """Segmenting cuts 1 s windows (a padded tail last), all grouped by the clip's group (or the clip
    itself), each a 16000-sample block of the store naming the clip's source file."""
    root = tmp_path / "raw"
    long_path = write_tone(root / "c" / "spk1_long.wav", duration=2.2)
    write_tone(root / "c" / "solo.wav", duration=1.4)
    with pytest.warns(UserWarning, match="does not match 1 of the 2 files"):  # solo has no speaker: its own group
        manifest = manifest_of(root, group_regex=r"(?P<group>spk\d)_")
    cfg = config(trim={"enabled": False}, duration={"mode": "segment", "seconds": 1.0, "hop_seconds": 0.5})
    out = tmp_path / "out"
    index, rejected = run(manifest, out, cfg)
    assert rejected.empty
    long = index[index["clip_id"] == "c/spk1_long"]
    # three full windows, then the tail from 1.5 s (0.7 s of audio) as one padded window
    assert long["id"].tolist() == [f"c/spk1_long__s{k}" for k in range(4)]
    assert long["start"].tolist() == [0.0, 0.5, 1.0, 1.5]
    assert set(long["group"]) == {"spk1"} and set(long["path"]) == {str(long_path)}
    solo = index[index["clip_id"] == "c/solo"]
    assert solo["id"].tolist() == ["c/solo__s0", "c/solo__s1"]  # one full window + padded tail
    assert set(solo["group"]) == {"c/solo"}
    assert index["duration"].tolist() == [1.0] * 6
    assert index["frames"].tolist() == [16000] * 6 and index["offset"].tolist() == [16000 * k for k in range(6)]
    assert store_shape(out) == (6 * 16000, 1)
    got = segments(out, index)
    assert_same_samples({k: v for k, v in got.items() if k.startswith("c/spk1_long")},
                        {f"c/spk1_long__s{k}": y for k, y in enumerate(in_memory(long_path, cfg))})


def test_multichannel_when_mono_is_off(tmp_path: Path) -> None:
    """``mono: false`` keeps a 4-channel clip's channels, in order, in a store of its own
    (``000-4ch.npy``, ``(samples, 4)``); the mono clip stays in ``000.npy``."""
    root = tmp_path / "raw"
    write_tone(root / "c" / "quad.flac", sr=22050, channels=4, duration=0.6, fmt="FLAC")
    write_tone(root / "c" / "mono.wav", sr=16000, channels=1, duration=0.6)
    out = tmp_path / "out"
    index, rejected = run(manifest_of(root), out, config(mono=False, trim={"enabled": False}))
    assert rejected.empty
    rows = index.set_index("id")
    assert rows.loc["c/quad", "store"] == "000-4ch" and rows.loc["c/mono", "store"] == "000"
    assert (rows.loc["c/quad", "sample_rate"], rows.loc["c/quad", "frames"]) == (16000, round(0.6 * 16000))
    assert rows.loc["c/quad", "duration"] == pytest.approx(0.6, abs=1e-3)
    assert store_shape(out, "000-4ch") == (round(0.6 * 16000), 4)
    assert store_shape(out, "000") == (rows.loc["c/mono", "frames"], 1)
    assert stored(out) == ["000-4ch.npy", "000.npy"]
    y = np.array(Stores(out / "audio").block("000-4ch", rows.loc["c/quad", "offset"], rows.loc["c/quad", "frames"]))
    peak_freqs = [np.argmax(np.abs(np.fft.rfft(y[:, c]))) / 0.6 for c in range(4)]
    assert peak_freqs == pytest.approx([300, 400, 500, 600], abs=5)  # channel order kept


def test_mixed_channel_counts_get_one_store_each(tmp_path: Path) -> None:
    """``mono: false`` with a mono and a stereo clip in one shard: ``000.npy`` ``(samples, 1)`` and
    ``000-2ch.npy`` ``(samples, 2)``; read_segment downmixes the stereo block as downmix_frames
    does; params back to ``mono: true`` remove the stereo store."""
    root = tmp_path / "raw"
    stereo_path = write_tone(root / "c" / "a stereo.wav", sr=16000, channels=2, duration=0.5)
    write_tone(root / "c" / "b mono.wav", sr=16000, channels=1, duration=0.4)
    manifest = manifest_of(root)
    out = tmp_path / "out"
    cfg = config(mono=False)
    index, rejected = run(manifest, out, cfg)
    assert rejected.empty
    rows = index.set_index("id")
    assert rows["store"].to_dict() == {"c/a stereo": "000-2ch", "c/b mono": "000"}
    assert rows["offset"].tolist() == [0, 0]
    assert store_shape(out, "000") == (rows.loc["c/b mono", "frames"], 1)
    assert store_shape(out, "000-2ch") == (rows.loc["c/a stereo", "frames"], 2)
    assert stored(out) == ["000-2ch.npy", "000.npy"]
    block = Stores(out / "audio").block("000-2ch", 0, rows.loc["c/a stereo", "frames"])
    [want] = in_memory(stereo_path, cfg)  # (2, n)
    assert block.tobytes() == np.ascontiguousarray(want.T).tobytes()  # the frames, interleaved, as processed
    got = segments(out, index)
    assert got["c/a stereo"].tobytes() == downmix_frames(np.array(block)).tobytes()
    assert got["c/a stereo"].shape == (rows.loc["c/a stereo", "frames"],)

    mono, _ = run(manifest, out, config(mono=True), previous=roundtrip(index, tmp_path))
    assert set(mono["store"]) == {"000"} and stored(out) == ["000.npy"]
    assert_contiguous(mono, out)


# ---------------------------------------------------------------------------------------------
# The per-clip cache


@pytest.fixture
def counted_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the stage decodes, in order (the decoding still happens)."""
    calls: list[str] = []
    real = process_mod.load_audio

    def load(path, **kwargs):
        calls.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(process_mod, "load_audio", load)
    return calls


def test_cache_reuses_reprocesses_and_cleans(tmp_path: Path, counted_loads: list[str], advised: list[str]) -> None:
    """Unchanged clips are reused without decoding; a changed file is processed again and its stale
    segment leaves the store; a clip gone from the manifest leaves the store; the samples of kept
    segments stay bit for bit; a deleted store is re-made; changed params re-process everything."""
    root = tmp_path / "raw"
    paths = [write_tone(root / "c" / f"{k}.wav", duration=2.2, freq=300 + 50 * k) for k in range(3)]
    out = tmp_path / "out"
    cfg = config(duration={"mode": "segment", "seconds": 1.0, "hop_seconds": 1.0, "min_seconds": 0.1})
    manifest = manifest_of(root)
    advised.clear()  # ingest's read-ahead of the headers
    first, _ = run(manifest, out, cfg, relative_to=tmp_path)
    assert len(counted_loads) == 3 and len(first) == 9
    assert advised == [os.path.realpath(p) for p in counted_loads]  # every file read ahead, in order
    assert store_shape(out) == (9 * 16000, 1)
    before = segments(out, first)
    store = (out / "audio" / "000.npy").read_bytes()

    # unchanged: nothing decoded, nothing read ahead, same rows (label changes are picked up)
    counted_loads.clear()
    advised.clear()
    relabelled = manifest.assign(label=["x", "c", "c"])
    second, _ = run(relabelled, out, cfg, previous=roundtrip(first, tmp_path), relative_to=tmp_path)
    assert counted_loads == [] and advised == []
    pd.testing.assert_frame_equal(second.drop(columns="label"), first.drop(columns="label"), check_dtype=False)
    assert second.groupby("clip_id")["label"].first().to_dict() == {"c/0": "x", "c/1": "c", "c/2": "c"}
    assert (out / "audio" / "000.npy").read_bytes() == store and stored(out) == ["000.npy"]

    # one file rewritten shorter (and its mtime moves): only it is decoded; its stale segment goes
    write_tone(paths[1], duration=1.2, freq=350)
    os.utime(paths[1], ns=(10**18, 10**18))
    manifest = manifest_of(root)
    advised.clear()
    third, _ = run(manifest, out, cfg, previous=second, relative_to=tmp_path)
    assert counted_loads == [str(paths[1])] and advised == [os.path.realpath(paths[1])]
    assert third[third["clip_id"] == "c/1"]["id"].tolist() == ["c/1__s0", "c/1__s1"]
    assert "c/1__s2" not in set(third["id"]) and store_shape(out) == (8 * 16000, 1)
    assert_contiguous(third, out)
    got = segments(out, third)
    assert_same_samples({k: v for k, v in got.items() if not k.startswith("c/1_")},
                        {k: v for k, v in before.items() if not k.startswith("c/1_")})
    assert_same_samples({k: v for k, v in got.items() if k.startswith("c/1_")},
                        {f"c/1__s{k}": y for k, y in enumerate(in_memory(paths[1], cfg))})

    # a clip that left the shard leaves the store; the others are kept, sample for sample
    counted_loads.clear()
    fourth, _ = run(manifest[manifest["id"] != "c/2"], out, cfg, previous=third, relative_to=tmp_path)
    assert counted_loads == [] and set(fourth["clip_id"]) == {"c/0", "c/1"}
    assert fourth["id"].tolist() == ["c/0__s0", "c/0__s1", "c/0__s2", "c/1__s0", "c/1__s1"]
    assert store_shape(out) == (5 * 16000, 1) and stored(out) == ["000.npy"]
    assert_contiguous(fourth, out)
    assert_same_samples(segments(out, fourth), {k: v for k, v in got.items() if not k.startswith("c/2_")})

    # a deleted store is re-made (every clip in it decoded again); changed params re-process everything
    (out / "audio" / "000.npy").unlink()
    fifth, _ = run(manifest, out, cfg, previous=fourth, relative_to=tmp_path)
    assert counted_loads == [str(p) for p in paths]
    assert_same_samples(segments(out, fifth), got)
    counted_loads.clear()
    run(manifest, out, config(), previous=fifth, relative_to=tmp_path)
    assert len(counted_loads) == 3


def test_clip_moved_to_another_shard_keeps_its_files(tmp_path: Path, counted_loads: list[str]) -> None:
    """n_shards changed: shard 0 reuses the clips it keeps and drops the others from its store without
    touching the store of shard 1, which now owns them (and holds the same samples)."""
    root = tmp_path / "raw"
    for k in range(4):
        write_tone(root / "c" / f"{k}.wav", duration=0.3 + 0.05 * k)
    out = tmp_path / "out"
    manifest = manifest_of(root)  # all in shard 0
    first, _ = run(manifest, out)
    before = segments(out, first)
    moved = manifest.assign(shard=[0, 0, 1, 1])  # n_shards changed: shard 1 now owns c/2 and c/3
    counted_loads.clear()
    one, _ = process_shard(manifest=moved, out_dir=out, config=config(), shard=1)
    assert one["clip_id"].tolist() == ["c/2", "c/3"] and set(one["shard"]) == {1} and set(one["store"]) == {"001"}
    assert len(counted_loads) == 2
    shard_one = (out / "audio" / "001.npy").read_bytes()
    counted_loads.clear()
    zero, _ = process_shard(manifest=moved, out_dir=out, config=config(), shard=0, previous=first)
    assert counted_loads == [] and zero["clip_id"].tolist() == ["c/0", "c/1"]
    assert (out / "audio" / "001.npy").read_bytes() == shard_one  # another shard's store is left alone
    assert stored(out) == ["000.npy", "001.npy"]
    assert_contiguous(zero, out, "000")
    assert_contiguous(one, out, "001")
    assert_same_samples({**segments(out, zero), **segments(out, one)}, before)


def test_audio_rewritten_by_a_killed_run_is_never_reused(tmp_path: Path, monkeypatch,
                                                         counted_loads: list[str]) -> None:
    """16 kHz -> 8 kHz (killed) -> 16 kHz. Killed after 2 clips: the store is untouched, the 2 clips
    its cache names at 8 kHz (in parts) are processed again, the others reused. Killed after its
    8 kHz store was written but before its cache: every clip is processed again, although the cache's
    key matches and the store exists."""
    root = tmp_path / "raw"
    paths = [write_tone(root / "c" / f"{k}.wav", sr=16000, duration=0.4, freq=300 + 40 * k) for k in range(5)]
    out, manifest = tmp_path / "out", manifest_of(root)
    first, _ = run(manifest, out)
    store = (out / "audio" / "000.npy").read_bytes()
    monkeypatch.setattr(process_mod, "CHECKPOINT_SECONDS", 0.0)
    real_preprocess = process_mod.preprocess
    calls = []

    def preprocess_then_die(y, *, sr, config):
        if len(calls) == 2:
            raise Killed
        calls.append(1)
        return real_preprocess(y, sr=sr, config=config)

    saved: list[pd.DataFrame] = []
    with monkeypatch.context() as m:
        m.setattr(process_mod, "preprocess", preprocess_then_die)
        with pytest.raises(Killed):
            run(manifest, out, config(sample_rate=8000), previous=roundtrip(first, tmp_path),
                checkpoint=lambda done: saved.append(roundtrip(done, tmp_path)))
    assert (out / "audio" / "000.npy").read_bytes() == store  # the store is untouched
    cache = saved[-1]
    assert sorted(cache["sample_rate"]) == [8000, 8000, 16000, 16000, 16000]
    assert cache["store"].str.startswith("parts/").sum() == 2
    counted_loads.clear()
    again, _ = run(manifest, out, previous=cache)
    assert counted_loads == [str(p) for p in paths[:2]]
    assert set(again["sample_rate"]) == {16000}
    pd.testing.assert_frame_equal(again.drop(columns="stamp"), first.drop(columns="stamp"))
    assert (out / "audio" / "000.npy").read_bytes() == store and stored(out) == ["000.npy"]  # parts gone

    def die(done: pd.DataFrame) -> None:
        saved.append(done)
        raise Killed

    monkeypatch.setattr(process_mod, "CHECKPOINT_SECONDS", 60.0)  # the checkpoint comes once, after the stores
    with pytest.raises(Killed):
        run(manifest, out, config(sample_rate=8000), previous=again, checkpoint=die)
    assert set(saved[-1]["sample_rate"]) == {8000} and saved[-1]["frames"].sum() == store_shape(out)[0]
    counted_loads.clear()
    last, _ = run(manifest, out, previous=again)  # the cache of the run before the kill
    assert counted_loads == [str(p) for p in paths]
    assert set(last["sample_rate"]) == {16000}
    pd.testing.assert_frame_equal(last.drop(columns="stamp"), first.drop(columns="stamp"))
    assert (out / "audio" / "000.npy").read_bytes() == store and stored(out) == ["000.npy"]


def test_a_killed_shard_keeps_its_checkpointed_work(tmp_path: Path, monkeypatch, counted_loads: list[str]) -> None:
    """Killed mid-shard (in a clip's processing), the last checkpoint's clips are reused; the result
    is that of an uninterrupted run, store bytes included, with no part left."""
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
    assert [len(s) for s in saved] == [1, 2, 3]  # before each clip after the first
    counted_loads.clear()
    index, _ = run(manifest, tmp_path / "out", previous=saved[-1], relative_to=tmp_path)
    assert len(counted_loads) == 2  # 3 clips done before the kill are reused
    pd.testing.assert_frame_equal(index.drop(columns="stamp"), clean.drop(columns="stamp"))
    store = (tmp_path / "out" / "audio" / "000.npy").read_bytes()
    assert store == (tmp_path / "clean" / "audio" / "000.npy").read_bytes()
    assert stored(tmp_path / "out") == ["000.npy"]


def test_a_run_killed_at_a_checkpoint_resumes_from_its_parts(tmp_path: Path, monkeypatch,
                                                             counted_loads: list[str]) -> None:
    """Killed by the checkpoint callback itself (after writing its third cache): the clips that cache
    names, in sealed parts, are reused without decoding, and the final store is byte for byte that
    of an uninterrupted run in a fresh folder; no part is left."""
    root = tmp_path / "raw"
    paths = [write_tone(root / "c" / f"{k}.wav", duration=0.6 + 0.3 * k, freq=300 + 40 * k) for k in range(5)]
    manifest = manifest_of(root)
    cfg = config(trim={"enabled": False}, duration={"mode": "segment", "seconds": 0.5, "hop_seconds": 0.5})
    clean, _ = run(manifest, tmp_path / "clean", cfg)
    monkeypatch.setattr(process_mod, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint before every clip
    saved: list[pd.DataFrame] = []

    def checkpoint(done: pd.DataFrame) -> None:
        saved.append(roundtrip(done, tmp_path))
        if len(saved) == 3:
            raise Killed

    out = tmp_path / "out"
    counted_loads.clear()
    with pytest.raises(Killed):
        run(manifest, out, cfg, checkpoint=checkpoint)
    assert len(counted_loads) == 3
    cache = saved[-1]
    assert cache["clip_id"].unique().tolist() == ["c/0", "c/1", "c/2"]
    assert cache["store"].str.startswith("parts/000-").all() and cache["store"].nunique() == 3  # one per seal
    assert not (out / "audio" / "000.npy").exists()
    assert len(list((out / "audio" / "parts").glob("000-*.npy"))) == 3

    counted_loads.clear()
    index, _ = run(manifest, out, cfg, previous=cache)
    assert counted_loads == [str(p) for p in paths[3:]]  # the checkpointed clips are not decoded
    pd.testing.assert_frame_equal(index.drop(columns="stamp"), clean.drop(columns="stamp"))
    assert (out / "audio" / "000.npy").read_bytes() == (tmp_path / "clean" / "audio" / "000.npy").read_bytes()
    assert not (out / "audio" / "parts").exists() or not any((out / "audio" / "parts").iterdir())
    assert stored(out) == ["000.npy"]


def test_a_cache_from_before_stores_is_processed_again(tmp_path: Path, counted_loads: list[str]) -> None:
    """A cache of one WAV per segment (no ``store`` column), even with matching keys and stamps, is
    not reused: its clips are processed again and its WAV files under ``out/audio`` deleted; WAV
    files it names elsewhere stay."""
    root = tmp_path / "raw"
    write_tone(root / "c" / "x.wav", duration=0.4)
    manifest = manifest_of(root)
    fresh, _ = run(manifest, tmp_path / "fresh", relative_to=tmp_path)  # the keys an old cache would hold
    samples = segments(tmp_path / "fresh", fresh)["c/x"]
    out = tmp_path / "out"
    old_wav = write_wav_at(out / "audio" / "c" / "x.wav", samples)
    outside = [write_wav_at(tmp_path / "keep" / "gone.wav", samples), write_wav_at(out / "gone.wav", samples),
               write_wav_at(tmp_path / "keep" / "absolute.wav", samples)]
    old_row = fresh.drop(columns=list(STORE_COLUMNS)).iloc[0].to_dict()
    old = pd.DataFrame([
        {**old_row, "path": "out/audio/c/x.wav", "stamp": file_stamp(old_wav)},
        {**old_row, "id": "c/gone", "clip_id": "c/gone", "path": "keep/gone.wav", "stamp": file_stamp(outside[0])},
        {**old_row, "id": "c/out", "clip_id": "c/out", "path": "out/gone.wav", "stamp": file_stamp(outside[1])},
        {**old_row, "id": "c/abs", "clip_id": "c/abs", "path": str(outside[2]), "stamp": file_stamp(outside[2])},
    ])
    assert "store" not in old.columns
    counted_loads.clear()
    index, _ = run(manifest, out, previous=roundtrip(old, tmp_path), relative_to=tmp_path)
    assert counted_loads == [str(root / "c" / "x.wav")]  # processed again
    assert not old_wav.exists() and not old_wav.parent.exists()  # nor the class folder it left empty
    assert all(p.is_file() for p in outside)
    assert stored(out) == ["000.npy"]
    pd.testing.assert_frame_equal(index.drop(columns="stamp"), fresh.drop(columns="stamp"))
    assert (out / "audio" / "000.npy").read_bytes() == (tmp_path / "fresh" / "audio" / "000.npy").read_bytes()
