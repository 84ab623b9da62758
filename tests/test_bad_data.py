"""End to end through the CLI: a dataset with one bad file of every kind gives exactly the good files'
outputs, every bad file once in the rejected report, and a report with the counts."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from audio_fixtures import tone, truncate, write_tone

from soundstage import decode
from soundstage.cli import main
from soundstage.io import read_csv
from soundstage.rejections import TooManyRejectedError, check_rejected_share, format_summary, summarize_run
from soundstage.report import small_class_warning

SR = 16000
PARAMS = {
    # a dataset of mostly bad files: the rejected share stops nothing here (tested below)
    "data": {"name": "bad-data", "root": "data/raw", "layout": "folder", "max_rejected_share": 1.0},
    "sharding": {"n_shards": 2},
    # the default (0) keeps every clip with audio; a minimum drops the short blip, and the report says so
    "process": {"sample_rate": SR, "duration": {"min_seconds": 0.25}},
    "split": {"ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
}


def make_dataset(raw: Path) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """3 classes x 4 good clips (+1 kept twin) and one bad file of each kind.

    Returns the ids of the good clips and ``{relative path: (stage, reason)}`` of the bad files.
    """
    good: set[str] = set()
    names = {"bird": ["song 1", "chant d'été", "歌", "song-4"], "dog": ["bark_1", "bark_2", "woof 3", "ñam"],
             "rain": ["drops", "storm (2)", "drizzle", "Ελληνικά"]}
    for c, (label, clips) in enumerate(names.items()):
        for k, name in enumerate(clips):
            fmt, ext = [("WAV", "wav"), ("FLAC", "flac"), ("WAV", "wav"), ("OGG", "ogg")][k]
            write_tone(raw / label / f"{name}.{ext}", sr=SR, duration=1.0, fmt=fmt, channels=1 + k % 2,
                       freq=200.0 * (c + 1) + 20 * k, subtype="VORBIS" if fmt == "OGG" else None)
            good.add(f"{label}/{name}")

    bad: dict[str, tuple[str, str]] = {}
    (raw / "bird" / "empty.wav").write_bytes(b"")
    bad["bird/empty.wav"] = ("ingest", "empty_file")
    (raw / "bird" / "notes.mp3").write_text("not audio at all\n" * 20)
    bad["bird/notes.mp3"] = ("ingest", "not_audio")
    full = write_tone(raw.parent / "full.wav", sr=SR, duration=1.0)
    truncate(full, raw / "bird" / "cut.wav")
    bad["bird/cut.wav"] = ("ingest", "truncated")

    full = write_tone(raw.parent / "full.flac", sr=SR, duration=1.0, fmt="FLAC")
    truncate(full, raw / "dog" / "cut.flac")  # only decoding finds this one
    bad["dog/cut.flac"] = ("process", "truncated")
    sf.write(raw / "dog" / "quiet.wav", np.zeros(SR, np.float32), SR)
    bad["dog/quiet.wav"] = ("process", "silent")
    y = tone(sr=SR, duration=1.0)
    y[500:510] = np.nan
    sf.write(raw / "dog" / "nan.wav", y, SR, subtype="FLOAT")
    bad["dog/nan.wav"] = ("process", "nonfinite")

    write_tone(raw / "rain" / "blip.wav", sr=SR, duration=0.1)
    bad["rain/blip.wav"] = ("process", "too_short")
    write_tone(raw / "rain" / "twin.flac", sr=SR, duration=1.0, fmt="FLAC")
    good.add("rain/twin")
    write_tone(raw / "rain" / "twin.wav", sr=SR, duration=1.0)
    bad["rain/twin.wav"] = ("ingest", "duplicate_id")
    write_tone(raw / "rain" / "locked.wav", sr=SR, duration=1.0)
    bad["rain/locked.wav"] = ("ingest", "unreadable")

    write_tone(raw / "loose.wav", sr=SR, duration=1.0)
    bad["loose.wav"] = ("ingest", "no_class_folder")

    (raw / "dog" / "howl.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(300))
    bad["dog/howl.m4a"] = ("ingest", "unsupported_extension")
    (raw / "bird" / "README.txt").write_text("recorded in the garden", encoding="utf-8")
    bad["bird/README.txt"] = ("ingest", "other_file")
    (raw / "bird" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: not data, never listed
    (raw / "bird" / "._song 1.wav").write_bytes(b"\0\5\26\7")
    return good, bad


@pytest.fixture
def locked_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rain/locked.wav`` cannot be read (chmod 000 does not stop root, so the OS refusal is simulated)."""
    real_open = open

    def guarded(file, *args, **kwargs):
        if os.fspath(file).endswith("/rain/locked.wav"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(decode, "open", guarded, raising=False)


def cli(*args: str) -> None:
    assert main(["--params", "params.yaml", *args]) == 0, args


def test_bad_files_never_stop_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locked_file: None,
                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "raw"
    good, bad = make_dataset(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS), encoding="utf-8")

    cli("ingest", "--out-dir", "data/ingest")
    for shard in range(2):
        cli("process", "--shard", str(shard), "--out-dir", "data/process")
    cli("split", "data/process/shards/000.csv", "data/process/shards/001.csv", "--out-dir", "data/split")
    cli("report", "--out-dir", "reports/dataset")
    err = capsys.readouterr().err
    assert "ingest: rejected 8 file(s)" in err and "[no_class_folder]" in err and "[unsupported_extension]" in err

    # exactly the good files were processed, each once, into float32 audio at the target rate
    index = pd.concat([read_csv(f"data/process/shards/{k:03d}.csv") for k in range(2)], ignore_index=True)
    assert sorted(index["id"]) == sorted(good)
    assert sorted(index["clip_id"]) == sorted(good)
    # one mono float32 store per shard, holding every kept clip's samples and nothing else
    assert sorted(p.name for p in Path("data/process/audio").glob("*.npy")) == ["000.npy", "001.npy"]
    assert not any(Path("data/process/audio/parts").iterdir())  # every part went into a store
    for shard, rows in index.groupby("shard"):
        store = np.load(f"data/process/audio/{int(shard):03d}.npy", mmap_mode="r")
        assert store.dtype == np.float32 and store.shape == (rows["frames"].sum(), 1)
    assert set(index["sample_rate"]) == {SR} and (index["frames"] == (index["duration"] * SR).round()).all()
    assert all(Path(p).is_absolute() or (raw / Path(p).relative_to("data/raw")).is_file() for p in index["path"])

    # every bad file exactly once, with its stage and reason, and named in the detail
    rejected = read_csv("reports/dataset/rejected.csv")
    rel = [Path(p).relative_to(raw).as_posix() for p in rejected["path"]]
    assert Counter(rel) == Counter(bad.keys())
    for name, stage, reason, detail in zip(rel, rejected["stage"], rejected["reason"], rejected["detail"]):
        assert (stage, reason) == bad[name], name
        assert str(raw / name) in detail, detail

    # splits hold every good clip once
    folds = read_csv("data/split/folds.csv")
    assert sorted(folds["id"]) == sorted(good) and set(folds["fold"].astype(str)) == {"0"}
    counts = read_csv("data/split/counts.csv").set_index("label")
    assert counts.loc["total", "total"] == len(good)

    report = Path("reports/dataset/report.md").read_text(encoding="utf-8")
    assert f"rejected files: **{len(bad)}** (ingest 8, process 4, features 0)" in report
    assert f"processed: **{len(good)}** clips" in report
    n_ingested = len(good) + sum(stage == "process" for stage, _ in bad.values())
    assert f"**{n_ingested}** usable clips of {n_ingested + 8} files examined" in report
    assert "- `process.duration.min_seconds=0.25` dropped **1** file (process: too_short)" in report
    assert "- **1** clip is silent (peak below -120 dBFS)" in report
    assert "| ingest | other_file | 1 | a file that is not audio by its extension" in report
    assert ".DS_Store" not in report and "._song" not in report

    # the verdict on this run: 11 of 24 files lost (README.txt is listed, not counted)
    summary = summarize_run(ingest_dir="data/ingest", process_dir="data/process", features_dir="data/features",
                            n_shards=2)
    assert (summary.rejected, summary.considered) == (len(bad) - 1, n_ingested + 7)
    assert f"rejected {len(bad) - 1} of {n_ingested + 7} files" in report
    assert format_summary(summary).startswith(f"rejected {len(bad) - 1} of {n_ingested + 7} files (45.8%): ")
    check_rejected_share(summary, max_share=PARAMS["data"]["max_rejected_share"])
    with pytest.raises(TooManyRejectedError, match=r"(?s)rejected 11 of 24 files.*truncated \(ingest 1, process 1\)"):
        check_rejected_share(summary, max_share=0.05)
    # bird kept 4 clips: too few to learn, and the report (and the CLI, through the same function) says so
    warning = small_class_warning(read_csv("data/ingest/manifest.csv")["label"])
    assert warning is not None and "1 of 3 classes" in warning and "'bird' 4 clips" in warning
    assert warning in report
    total = counts.loc["total"]
    assert f"| total | {total['train']} | {total['val']} | {total['test']} | {len(good)} |" in report
    for name in bad:
        assert str(raw / name) in report
    assert Path("reports/dataset/class_balance.png").is_file() and Path("reports/dataset/durations.png").is_file()
