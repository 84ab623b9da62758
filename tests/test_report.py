"""Tests of soundstage.report: the dataset report from the tables of a (small, hand-made) run.

Processed audio is written as the ``process`` stage stores it: float32 samples in a shard's audio
store ``process/audio/<store>.npy``, located by the process index rows' ``store, offset, frames,
sample_rate``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audio_fixtures import write_audio_store

import soundstage.report as report_module
from soundstage.decode import downmix_frames
from soundstage.io import read_csv, write_csv, write_json
from soundstage.report import (
    EXAMPLES_PER_CLASS,
    choose_examples,
    collect_rejected,
    dataset_report,
    duration_histogram,
    formats_seen,
    plot_example,
    settings_dropped,
    small_class_warning,
    small_classes,
)
from soundstage.split import FOLD_COLUMNS, REFIT, SplitResult, assignment_hash, counts_table, split_dataset
from soundstage.store import StoreWriter


def rej(path: str, clip_id: str, stage: str, reason: str) -> dict:
    return {"path": path, "id": clip_id, "stage": stage, "reason": reason, "detail": f"'{path}': {reason} | why"}


@pytest.fixture
def run_dirs(tmp_path: Path) -> dict[str, Path]:
    d = {name: tmp_path / "data" / name for name in ("ingest", "process", "split", "features")}
    rows = []
    for k, (label, sr, ch, dur) in enumerate([("cat", 16000, 1, 1.0), ("cat", 44100, 2, 2.0), ("cat", 16000, 1, 3.0),
                                              ("dog", 8000, 1, 1.5), ("dog", 16000, 6, 4.0), ("owl", 48000, 2, 0.5)]):
        rows.append({"id": f"{label}/{k}", "path": f"/raw/{label}/{k}.wav", "label": label,
                     "group": "g1" if k < 2 else None, "duration": dur, "sample_rate": sr, "channels": ch,
                     "format": "FLAC" if ch == 2 else "WAV", "shard": k % 2})
    manifest = pd.DataFrame(rows)
    write_csv(d["ingest"] / "manifest.csv", manifest)
    write_csv(d["ingest"] / "rejected.csv", pd.DataFrame([rej("/raw/x.wav", "x", "ingest", "no_class_folder"),
                                                          rej("/raw/cat/z.wav", "cat/z", "ingest", "not_audio")]))
    kept = manifest[manifest["id"] != "dog/4"]  # rejected in process
    index = pd.DataFrame({"id": kept["id"], "clip_id": kept["id"], "path": kept["path"], "label": kept["label"],
                          "group": kept["group"].fillna(kept["id"]), "duration": kept["duration"] - 0.1,
                          "start": 0.0, "sample_rate": 16000, "shard": kept["shard"], "key": "k"})
    # Where each segment's samples are in its shard's audio store (no store is written: no figure reads it).
    index["store"] = index["shard"].map("{:03d}".format)
    index["frames"] = (index["duration"] * 16000).round().astype(int)
    index["offset"] = index.groupby("shard")["frames"].cumsum() - index["frames"]
    for shard in (0, 1):
        part = index[index["shard"] == shard]
        write_csv(d["process"] / "shards" / f"{shard:03d}.csv", part)
        write_csv(d["process"] / "shards" / f"{shard:03d}.rejected.csv",
                  pd.DataFrame([rej("/raw/dog/4.wav", "dog/4", "process", "silent")] if shard == 0 else [],
                               columns=["path", "id", "stage", "reason", "detail"]))
    # a shard table left over from an earlier run with 8 shards
    write_csv(d["process"] / "shards" / "005.rejected.csv",
              pd.DataFrame([rej("/raw/old.wav", "old", "process", "silent")]))
    write_csv(d["process"] / "shards" / "005.csv", index.head(1))
    write_csv(d["features"] / "shards" / "001.rejected.csv",
              pd.DataFrame([rej("data/process/audio/owl/5.wav", "owl/5", "features", "unreadable")]))
    # one fold, as ratio mode writes it
    folds = index.assign(fold="0", split=["train", "train", "val", "test", "test"])[FOLD_COLUMNS]
    counts = counts_table(folds["label"], folds["split"])
    info = {"mode": "ratio", "k": 1, "folds": [{"fold": "0", "name": None, "train": 2, "val": 1, "test": 2}],
            "refit": None, "hash": assignment_hash(folds)}
    write_split(d["split"], folds, counts.assign(fold="0")[["fold", *counts.columns]], info)
    d["out"] = tmp_path / "reports" / "dataset"
    return d


def write_split(folder: Path, folds: pd.DataFrame, counts: pd.DataFrame, info: dict) -> None:
    """The split stage's outputs: folds.csv, counts.csv, folds.json (and an empty unassigned.csv)."""
    write_csv(folder / "folds.csv", folds)
    write_csv(folder / "counts.csv", counts)
    write_json(folder / "folds.json", info)
    write_csv(folder / "unassigned.csv", pd.DataFrame(columns=["id", "clip_id", "label", "group", "reason"]))


def write_result(folder: Path, result: SplitResult) -> None:
    write_split(folder, result.folds, result.counts, result.info)


def report(d: dict[str, Path], **kw) -> str:
    path = dataset_report(ingest_dir=d["ingest"], process_dir=d["process"], split_dir=d["split"],
                          features_dir=d["features"], out_dir=d["out"], dataset="toy", **kw)
    assert path == d["out"] / "report.md"
    return path.read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    body = text.split(f"## {title}\n", 1)[1]
    return body.split("\n## ", 1)[0]


def test_report_sections(run_dirs: dict[str, Path]) -> None:
    text = report(run_dirs, n_shards=2)
    assert text.startswith("# Dataset report: toy")
    summary = section(text, "Summary")
    assert "**6** usable clips of 8 files examined" in summary and "**3** classes" in summary
    assert "**1** group(s)" in summary
    assert "processed: **5** clips -> **5** segments" in summary
    assert "rejected files: **4** (ingest 2, process 1, features 1)" in summary
    assert "train **2** clips" in summary and "val **1** clips" in summary and "test **2** clips" in summary

    balance = section(text, "Class balance")
    assert "![class balance](class_balance.png)" in balance
    assert "| label | clips | audio | groups | processed_clips | segments | rejected_later | share |" in balance
    assert "| cat | 3 | 6.0 s |" in balance and "| dog | 2 |" in balance and "| owl | 1 |" in balance
    dog = next(line for line in balance.splitlines() if line.startswith("| dog |")).split(" | ")
    assert dog[4:7] == ["1", "1", "1"]  # processed clips, segments, rejected after ingest

    durations = section(text, "Durations")
    assert "![durations](durations.png)" in durations and "| from_s | to_s | clips |" in durations

    formats = section(text, "Sample rates, channels and formats seen")
    for row in ("| 8000 | 1 |", "| 16000 | 3 |", "| 44100 | 1 |", "| 48000 | 1 |",  # rates
                "| 1 | 3 |", "| 2 | 2 |", "| 6 | 1 |", "| FLAC | 2 |", "| WAV | 4 |"):
        assert row in formats, row

    rejected = section(text, "Rejected files")
    for stage, reason, name in [("ingest", "no_class_folder", "/raw/x.wav"), ("ingest", "not_audio", "/raw/cat/z.wav"),
                                ("process", "silent", "/raw/dog/4.wav"),
                                ("features", "unreadable", "data/process/audio/owl/5.wav")]:
        assert f"| {stage} | {reason} | {name} | {reason} \\| why |" in rejected  # a | in a cell is escaped
    assert "old.wav" not in text  # the stale shard 005 is not part of this run

    splits = section(text, "Split counts")
    assert "| label | train | val | test | total |" in splits and "| total | 2 | 1 | 2 | 5 |" in splits
    assert "more than one split: **0**" in splits
    assert "Classes absent from a split: cat (test)" in splits

    for name in ("class_balance.png", "durations.png"):
        assert (run_dirs["out"] / name).read_bytes()[:4] == b"\x89PNG"
    table = read_csv(run_dirs["out"] / "rejected.csv")
    assert list(table.columns) == ["path", "id", "stage", "reason", "detail"]
    assert table["stage"].tolist() == ["ingest", "ingest", "process", "features"]
    # the Snakemake report's tables, as HTML pages
    pages = {name: (run_dirs["out"] / f"{name}.html").read_text(encoding="utf-8")
             for name in ("rejected", "formats", "split_counts")}
    assert pages["rejected"].count("<tr") == 5 and "<td>/raw/dog/4.wav</td>" in pages["rejected"]
    assert "<td>FLAC</td>" in pages["formats"] and pages["formats"].count("<tr") == 1 + len(
        formats_seen(read_csv(run_dirs["ingest"] / "manifest.csv")))
    assert "<th>fold</th>" in pages["split_counts"] and "<td>total</td>" in pages["split_counts"]


def test_formats_seen_counts_each_combination_most_common_first() -> None:
    manifest = pd.DataFrame({"format": ["WAV", "WAV", "FLAC", "WAV", "MP3"],
                             "sample_rate": [16000, 16000, 44100, 8000, 44100], "channels": [1, 1, 2, 1, 2]})
    seen = formats_seen(manifest)
    assert seen.to_dict("records") == [
        {"format": "WAV", "sample_rate": 16000, "channels": 1, "clips": 2},
        {"format": "FLAC", "sample_rate": 44100, "channels": 2, "clips": 1},
        {"format": "MP3", "sample_rate": 44100, "channels": 2, "clips": 1},
        {"format": "WAV", "sample_rate": 8000, "channels": 1, "clips": 1}]
    assert list(formats_seen(manifest.head(0)).columns) == ["format", "sample_rate", "channels", "clips"]


def test_leak_and_stale_shards_without_n_shards(run_dirs: dict[str, Path]) -> None:
    folds = read_csv(run_dirs["split"] / "folds.csv", text=["fold"])
    train = folds[folds["split"] == "train"]
    write_csv(run_dirs["split"] / "folds.csv", pd.concat([folds, train.head(1).assign(id="dup", split="test")]))
    text = report(run_dirs)  # n_shards unknown: every shard table counts
    assert "old.wav" in section(text, "Rejected files")
    assert "more than one split: **1** (leakage!)" in text


def test_long_rejected_list_is_cut(run_dirs: dict[str, Path]) -> None:
    many = pd.DataFrame([rej(f"/raw/n{k}.wav", f"n{k}", "ingest", "not_audio") for k in range(30)])
    write_csv(run_dirs["ingest"] / "rejected.csv", many)
    text = report(run_dirs, n_shards=2, max_listed=10)
    assert "... and 22 more: see `rejected.csv`." in text
    assert len(read_csv(run_dirs["out"] / "rejected.csv")) == 32


def test_report_before_processing_and_with_nothing_usable(tmp_path: Path) -> None:
    d = {name: tmp_path / name for name in ("ingest", "process", "split", "features", "out")}
    write_csv(d["ingest"] / "manifest.csv", pd.DataFrame(columns=["id", "path", "label", "group", "duration",
                                                                   "sample_rate", "channels", "format", "shard"]))
    write_csv(d["ingest"] / "rejected.csv", pd.DataFrame([rej("/r/a.wav", "a", "ingest", "empty_file")]))
    text = report(d)
    assert "**0** usable clips of 1 files examined" in text
    assert "processed: not yet" in text and "No split yet." in text and "No usable clip." in text
    assert "| ingest | empty_file | /r/a.wav |" in text
    assert "No clip with features yet." in section(text, "Examples")
    # The figures the pipeline declares exist whatever the data, the examples folder too (empty).
    for name in ("class_balance.png", "durations.png"):
        assert (d["out"] / name).read_bytes()[:4] == b"\x89PNG"
    assert (d["out"] / "examples").is_dir() and not any((d["out"] / "examples").iterdir())
    assert "<p>None.</p>" in (d["out"] / "split_counts.html").read_text(encoding="utf-8")


def test_collect_rejected_deduplicates(run_dirs: dict[str, Path]) -> None:
    shards = run_dirs["process"] / "shards"
    write_csv(shards / "001.rejected.csv", read_csv(shards / "000.rejected.csv"))  # same row twice
    table = collect_rejected(ingest_dir=run_dirs["ingest"], process_dir=run_dirs["process"],
                             features_dir=run_dirs["features"], n_shards=2)
    assert table["stage"].tolist() == ["ingest", "ingest", "process", "features"]


def test_duration_histogram() -> None:
    hist = duration_histogram(pd.Series([1.0, 1.0, 2.0, 3.0]), bins=2)
    assert hist.to_dict("list") == {"from_s": [1.0, 2.0], "to_s": [2.0, 3.0], "clips": [2, 2]}
    same = duration_histogram(pd.Series([5.0, 5.0]), bins=4)
    assert same["clips"].sum() == 2
    assert duration_histogram(pd.Series([], dtype=float)).empty


def test_settings_dropped_counts_each_setting() -> None:
    def too_short(k: int, s: float) -> dict:
        return {"path": f"/raw/d/{k}.wav", "id": f"d/{k}", "stage": "process", "reason": "too_short",
                "detail": f"'/raw/d/{k}.wav': {s:.3f} s after trimming is shorter than "
                          "process.duration.min_seconds=0.25 [too_short]"}

    rows = [too_short(k, 0.2 + k / 1000) for k in range(3)]
    rows.append({"path": "/raw/d/x.wav", "id": "d/x", "stage": "process", "reason": "too_short",
                 "detail": "'/raw/d/x.wav': 0.500 s is shorter than process.duration.seconds=1 with "
                           "process.duration.short=reject [too_short]"})
    rows.append({"path": "/raw/loose.wav", "id": "loose", "stage": "ingest", "reason": "no_class_folder",
                 "detail": "/raw/loose.wav: directly under data.root, no class folder at data.folder.label_level=-1"})
    rows.append({"path": "/raw/d/a.m4a", "id": "d/a", "stage": "ingest", "reason": "unsupported_extension",
                 "detail": "/raw/d/a.m4a: .m4a is not in data.extensions (mp3, wav): not decoded"})
    rows.append({"path": "/raw/data.process/q.wav", "id": "q", "stage": "process", "reason": "silent",
                 "detail": "'/raw/data.process/q.wav': silent after trimming (0 samples): nothing to keep"})
    table = settings_dropped(pd.DataFrame(rows))
    assert table.to_dict("records") == [
        {"setting": "process.duration.min_seconds=0.25", "stage": "process", "reason": "too_short", "files": 3},
        {"setting": "process.duration.seconds=1, process.duration.short=reject", "stage": "process",
         "reason": "too_short", "files": 1},
        {"setting": "data.folder.label_level=-1", "stage": "ingest", "reason": "no_class_folder", "files": 1},
        {"setting": "data.extensions", "stage": "ingest", "reason": "unsupported_extension", "files": 1},
    ]  # the silent clip names no setting (its path's "data.process" is no key)
    assert settings_dropped(pd.DataFrame(columns=["path", "id", "stage", "reason", "detail"])).empty


def test_small_classes() -> None:
    labels = pd.Series(["dog"] * 40 + ["cat"] * 40 + ["bark.wav"] + ["owl"] * 4)
    assert small_classes(labels) == {"bark.wav": 1, "owl": 4}
    warning = small_class_warning(labels)
    assert warning is not None and warning.startswith("WARNING: 2 of 4 classes have very few clips")
    assert "'bark.wav' 1 clip (named like an audio file: a folder such as <class>/bark.wav/" in warning
    assert "'owl' 4 clips;" not in warning and "'owl' 4 clips." in warning and "median class, 22 clips" in warning
    # under 1 % of the median class, however many clips that is
    big = pd.Series(["a"] * 2000 + ["b"] * 2000 + ["e"] * 2000 + ["c"] * 15 + ["d"] * 25)
    assert small_classes(big) == {"c": 15}
    assert small_class_warning(pd.Series(["a"] * 5 + ["b"] * 9)) is None
    assert small_classes(pd.Series([], dtype=object)) == {} and small_class_warning(pd.Series([], dtype=object)) is None


def test_report_flags_small_classes_settings_and_the_share(run_dirs: dict[str, Path]) -> None:
    shards = run_dirs["process"] / "shards"
    write_csv(shards / "001.rejected.csv", pd.DataFrame([{
        "path": "/raw/owl/9.wav", "id": "owl/9", "stage": "process", "reason": "too_short",
        "detail": "'/raw/owl/9.wav': 0.242 s after trimming is shorter than process.duration.min_seconds=0.25"}]))
    text = report(run_dirs, n_shards=2, max_rejected_share=0.05)
    assert "- rejected 5 of 8 files (62.5%): " in section(text, "Summary")
    assert "the run stops above `data.max_rejected_share` = 0.05" in text
    assert "**WARNING: 3 of 3 classes have very few clips" in section(text, "Class balance")
    rejected = section(text, "Rejected files")
    assert "- `process.duration.min_seconds=0.25` dropped **1** file (process: too_short)" in rejected
    assert "| process | too_short | 1 | shorter than process.duration.min_seconds" in rejected
    assert "- **1** clip is silent (peak below -120 dBFS)" in rejected


def fold_run(tmp_path: Path) -> tuple[dict[str, Path], pd.DataFrame]:
    """A run of 4 classes x 12 speakers (2 clips each) plus a 'rare' class of 2 speakers, nothing
    processed yet; returns the stage folders and the rows the split stage splits."""
    d = {name: tmp_path / "data" / name for name in ("ingest", "process", "split", "features")}
    d["out"] = tmp_path / "reports" / "dataset"
    rows = [{"id": f"L{g % 4}/s{g}_{k}", "label": f"L{g % 4}", "group": f"s{g}"} for g in range(12) for k in range(2)]
    rows += [{"id": f"rare/r{g}", "label": "rare", "group": f"r{g}"} for g in range(2)]
    manifest = pd.DataFrame(rows).assign(path=lambda m: "/raw/" + m["id"] + ".wav", duration=1.0, sample_rate=16000,
                                         channels=1, format="WAV", shard=0)
    write_csv(d["ingest"] / "manifest.csv", manifest)
    write_csv(d["ingest"] / "rejected.csv", pd.DataFrame(columns=["path", "id", "stage", "reason", "detail"]))
    return d, manifest[["id", "label", "group"]].assign(clip_id=manifest["id"])


def test_report_of_k_folds(tmp_path: Path) -> None:
    d, rows = fold_run(tmp_path)
    with pytest.warns(UserWarning, match=r"class 'rare' has no clip in .*test of fold"):
        result = split_dataset(rows, seed=0, mode="kfold", k=3, val_share=0.2)
    write_result(d["split"], result)
    text = report(d)
    tested = result.folds[result.folds["split"] == "test"].groupby("fold")["clip_id"].nunique()
    assert (f"- split: **3** folds (split.mode kfold), {tested.min()}-{tested.max()} test clips each, "
            f"and the refit fold `{REFIT}`") in section(text, "Summary")
    splits = section(text, "Split counts")
    assert "**3** folds (split.mode kfold)" in splits
    header = "| fold | name | train | val | test | test clips | groups in two splits | classes absent from test |"
    assert header in splits
    for f in result.info["folds"]:
        line = next(x for x in splits.splitlines() if x.startswith(f"| {f['fold']} |"))
        assert line.startswith(f"| {f['fold']} |  | {f['train']} | {f['val']} | {f['test']} |"), line
    absent = [x for x in splits.splitlines() if x.startswith("| ") and x.endswith("| rare |")]
    assert len(absent) == 1  # 2 speakers, 3 folds: one fold tests no rare clip
    assert "Groups found in more than one split of a fold: **0**" in splits and "leakage" not in splits
    refit = result.folds[result.folds["fold"] == REFIT]
    assert (f"Refit fold `all` (the final model): train **{(refit['split'] == 'train').sum()}**, "
            f"val **{(refit['split'] == 'val').sum()}** rows.") in splits
    assert "| label | 0 | 1 | 2 |" in splits  # test rows per label and fold

    # a group in train and test of fold 1: leakage, counted in its row
    folds = result.folds
    tested_group = folds.loc[(folds["fold"] == "1") & (folds["split"] == "test"), "group"].iloc[0]
    leak = folds[(folds["fold"] == "1") & (folds["group"] == tested_group)].head(1).assign(id="dup", split="train")
    write_csv(d["split"] / "folds.csv", pd.concat([folds, leak], ignore_index=True))
    splits = section(report(d), "Split counts")
    assert "Groups found in more than one split of a fold: **1** (leakage!)" in splits
    assert next(x for x in splits.splitlines() if x.startswith("| 1 |")).split(" | ")[6] == "1"


def test_report_of_groups_left_out_without_folds_json(tmp_path: Path) -> None:
    d, rows = fold_run(tmp_path)
    result = split_dataset(rows, seed=0, mode="leave_one_group_out", val_share=0.0)  # 'rare' has 2 speakers
    write_result(d["split"], result)
    splits = section(report(d), "Split counts")
    assert "**14** folds (split.mode leave_one_group_out)" in splits
    assert "| 0 | r0 | 25 | 0 | 1 | 1 | 0 | L0, L1, L2, L3 |" in splits  # one fold per speaker, natural order
    assert "| 12 | s10 | 24 | 0 | 2 | 2 | 0 | L0, L1, L3, rare |" in splits.split("| 11 | s9 |")[1]
    (d["split"] / "folds.json").unlink()  # the fold table alone still gives the folds
    splits = section(report(d), "Split counts")
    assert "**14** folds (split.mode ?)" in splits and "| 13 |  | 24 | 0 | 2 |" in splits


# ------------------------------------------------------------------ example clips


def clip_rows(labels: dict[str, int], *, segments: int = 1) -> pd.DataFrame:
    """``id, clip_id, label`` as the features shard tables hold them: ``labels[label]`` clips per label,
    each cut into ``segments`` rows (``<clip>__s<k>``) when more than one."""
    rows = []
    for label, n in labels.items():
        for k in range(n):
            clip = f"{label}/{label}.{k:03d}"
            for s in range(segments):
                rows.append({"id": clip if segments == 1 else f"{clip}__s{s}", "clip_id": clip, "label": label})
    return pd.DataFrame(rows)


def test_choose_examples_is_seeded_bounded_and_stable_per_class() -> None:
    rows = clip_rows({"dog": 9, "cat": 5, "owl": 1})
    chosen = choose_examples(rows, seed=3)
    assert list(chosen.columns) == ["id", "clip_id", "label"]
    assert chosen["label"].tolist() == ["cat", "cat", "dog", "dog", "owl"]  # by label, at most 2 each
    assert chosen.groupby("label")["clip_id"].apply(lambda c: c.is_monotonic_increasing).all()
    pd.testing.assert_frame_equal(chosen, choose_examples(rows.sample(frac=1, random_state=1), seed=3))
    others = {seed: choose_examples(rows, seed=seed) for seed in range(6)}
    assert len({tuple(c["clip_id"]) for c in others.values()}) > 1  # the seed decides
    # Adding a class (or clips of another class) does not move the choice of the others.
    more = pd.concat([rows, clip_rows({"ant": 4, "bee": 3})], ignore_index=True)
    mine = choose_examples(more, seed=3)
    pd.testing.assert_frame_equal(mine[mine["label"].isin(["cat", "dog", "owl"])].reset_index(drop=True), chosen)
    # Bounded: at most max_classes classes (the first in label order), per_class clips each.
    many = clip_rows({f"c{k:02d}": 3 for k in range(20)})
    bounded = choose_examples(many, seed=0)
    assert bounded["label"].nunique() == 16 and bounded["label"].iloc[-1] == "c15"
    assert len(bounded) == 16 * EXAMPLES_PER_CLASS
    assert len(choose_examples(many, seed=0, per_class=1, max_classes=3)) == 3
    assert choose_examples(many, seed=0, per_class=0).empty and choose_examples(many.head(0), seed=0).empty


def test_choose_examples_shows_a_clip_once_by_its_first_segment() -> None:
    chosen = choose_examples(clip_rows({"dog": 3}, segments=3), seed=0)
    assert chosen["clip_id"].is_unique and len(chosen) == 2
    assert all(i == f"{c}__s0" for i, c in zip(chosen["id"], chosen["clip_id"]))


def add_features(d: dict[str, Path], rows: pd.DataFrame, *, seconds: float = 1.0, sr: int = 8000,
                 saved: tuple[str, ...] = ("logmel", "mfcc")) -> pd.DataFrame:
    """What process and features leave for the rows: the processed audio (mono, in the process audio
    store ``000.npy``; the process shard indexes there are place the rows there), a features shard table
    and the saved matrices (``(n_bins, frames)``, 100 frames per second). Returns the rows' process
    index columns ``id, store, offset, frames, sample_rate``."""
    rng = np.random.default_rng(0)
    write_csv(d["features"] / "shards" / "000.rejected.csv",
              pd.DataFrame(columns=["path", "id", "stage", "reason", "detail"]))
    frames = int(seconds * 100)
    kinds = [(name, bins) for name, bins in (("logmel", 16), ("mfcc", 12)) if name in saved]
    writers = [StoreWriter(d["features"] / name / "000.npy", bins) for name, bins in kinds]
    offsets, audio = [], []
    for _ in rows["id"]:
        audio.append((0.5 * rng.standard_normal(int(seconds * sr))).clip(-1, 1).astype(np.float32))
        offsets.append([w.append(rng.standard_normal((w.n_bins, frames)).astype(np.float32)) for w in writers][0])
    for w in writers:
        w.close()
    rows[["id", "clip_id", "label"]].assign(store="000", offset=offsets, frames=frames).to_parquet(
        d["features"] / "shards" / "000.parquet")
    placed = pd.DataFrame({"id": rows["id"].astype(str).to_numpy(), "store": "000",
                           "offset": write_audio_store(d["process"] / "audio" / "000.npy", audio),
                           "frames": int(seconds * sr), "sample_rate": sr})
    by_id = placed.set_index("id")
    for f in sorted((d["process"] / "shards").glob("[0-9][0-9][0-9].csv")):
        index = read_csv(f)
        hit = index["id"].isin(by_id.index)
        for col in by_id.columns:
            index.loc[hit, col] = by_id.loc[index.loc[hit, "id"], col].to_numpy()
        write_csv(f, index)
    return placed


@pytest.fixture
def drawn(monkeypatch) -> dict[str, list]:
    """What the example figures drew: ``waveform`` the ``(samples, sample rate)`` of each waveform panel,
    ``notes`` the text of each note (a panel with nothing to draw); the figures are still drawn."""
    seen: dict[str, list] = {"waveform": [], "notes": []}
    waveform, note = report_module._waveform, report_module._note

    def record_waveform(ax, y, sr, **kw):
        seen["waveform"].append((np.array(y), sr))
        waveform(ax, y, sr, **kw)

    def record_note(ax, text):
        seen["notes"].append(text)
        note(ax, text)

    monkeypatch.setattr(report_module, "_waveform", record_waveform)
    monkeypatch.setattr(report_module, "_note", record_note)
    return seen


def test_report_draws_example_clips(run_dirs: dict[str, Path], drawn: dict[str, list]) -> None:
    """Up to 2 clips per class with features, each figure with the waveform of its processed audio, which
    the report finds through the process shard indexes."""
    kept = read_csv(run_dirs["process"] / "shards" / "000.csv")
    kept = pd.concat([kept, read_csv(run_dirs["process"] / "shards" / "001.csv")], ignore_index=True)
    # owl/5: features rejected
    placed = add_features(run_dirs, kept.loc[kept["id"] != "owl/5", ["id", "clip_id", "label"]])
    text = report(run_dirs, n_shards=2, seed=1)
    examples = section(text, "Examples")
    assert "drawn with `seed` 1" in examples and "log-mel (dB), MFCC" in examples
    assert "### cat" in examples and "### dog" in examples and "### owl" not in examples
    out = run_dirs["out"] / "examples"
    figures = sorted(f.relative_to(out).as_posix() for f in out.rglob("*.png"))
    assert len(figures) == 3 and all(f.startswith(("cat/cat_", "dog/dog_")) for f in figures)  # cat: 2 of 3, dog: 1
    for f in figures:
        assert f"](examples/{f})" in examples
        assert (out / f).read_bytes()[:4] == b"\x89PNG"
    assert "### cat" in text.split("## Examples")[1]  # the last section
    # Each figure drew its clip's samples, read from the process audio store where its index row places them.
    store = np.load(run_dirs["process"] / "audio" / "000.npy")
    clips = [f"{f.split('/')[0]}/{f.split('_', 1)[1][:-len('.png')]}" for f in figures]  # cat/cat_1.png -> cat/1
    assert len(drawn["waveform"]) == 3 and not [n for n in drawn["notes"] if "processed audio" in n]
    for clip, (y, sr) in zip(clips, drawn["waveform"]):
        where = placed.set_index("id").loc[clip]
        assert sr == 8000
        np.testing.assert_array_equal(y, store[where["offset"]:where["offset"] + where["frames"], 0])

    # Another seed draws other cat clips: the figures of the first choice are gone.
    before = set(figures)
    for seed in range(2, 12):
        report(run_dirs, n_shards=2, seed=seed)
        after = {f.relative_to(out).as_posix() for f in out.rglob("*.png")}
        if after != before:
            break
    assert after != before and len(after) == 3


def test_example_figure_is_bounded_and_survives_missing_files(tmp_path: Path) -> None:
    from PIL import Image

    d = {name: tmp_path / name for name in ("process", "features")}
    rows = clip_rows({"dog": 2})
    placed = add_features(d, rows, seconds=5.0, saved=("logmel",))  # no MFCC saved
    clip = rows["id"].iloc[1]
    where = placed.set_index("id").loc[clip]
    audio = (d["process"] / "audio" / "000.npy", int(where["offset"]), int(where["frames"]), 8000)
    path = tmp_path / "fig.png"
    plot_example(clip_id=clip, segment_id=clip, label="dog", audio=audio,
                 matrices={"logmel": (d["features"] / "logmel" / "000.npy", 500, 500),
                           "mfcc": (d["features"] / "mfcc" / "000.npy", 500, 500)}, path=path, max_seconds=2.0)
    assert Image.open(path).size[0] > 100
    # A table that asks for more frames than its store has (a stale one): a note, not a failure.
    plot_example(clip_id=clip, segment_id=clip, label="dog", audio=audio,
                 matrices={"logmel": (d["features"] / "logmel" / "000.npy", 900, 500)}, path=tmp_path / "stale.png")
    assert (tmp_path / "stale.png").read_bytes()[:4] == b"\x89PNG"
    # Nothing to draw but the title: still a figure, no error.
    plot_example(clip_id="x", segment_id="x__s1", label="dog", audio=(tmp_path / "none.npy", 0, 800, 8000),
                 matrices={"logmel": tmp_path / "none.npy"}, path=tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


def test_example_waveform_is_read_from_the_process_audio_store(tmp_path: Path, drawn: dict[str, list]) -> None:
    """plot_example draws the samples ``audio`` = (store, offset, samples, rate) names: the block at that
    offset of a process audio store, a multichannel one downmixed as ``downmix_frames`` does, cut at
    ``max_seconds``; no audio (not in the process index), a missing store or one shorter than the row
    says leaves a note in the waveform panel, and the figure is still written."""
    rng = np.random.default_rng(1)
    sr = 4000
    stereo = [rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32) for n in (3000, 10000)]
    store = tmp_path / "process" / "audio" / "000-2ch.npy"
    offsets = write_audio_store(store, stereo)
    assert np.load(store).shape == (13000, 2) and offsets == [0, 3000]
    matrices = {"logmel": tmp_path / "none.npy"}
    path = tmp_path / "fig.png"
    plot_example(clip_id="a", segment_id="a", label="dog", audio=(store, 3000, 10000, sr), matrices=matrices,
                 path=path, max_seconds=2.0)
    assert path.read_bytes()[:4] == b"\x89PNG"
    ((y, rate),) = drawn["waveform"]
    assert rate == sr and y.dtype == np.float32
    np.testing.assert_array_equal(y, downmix_frames(stereo[1])[:2 * sr])  # the second segment, its first 2 s
    assert not [n for n in drawn["notes"] if "processed audio" in n]
    # No place in the process index, a store that is not there, a row past the store's end: a note each.
    drawn["notes"].clear()
    for name, audio in [("none", None), ("missing", (tmp_path / "process" / "audio" / "001.npy", 0, 100, sr)),
                        ("short", (store, 12000, 2000, sr))]:
        plot_example(clip_id=name, segment_id=name, label="dog", audio=audio, matrices={},
                     path=tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert len(drawn["waveform"]) == 1  # nothing more drawn
    assert drawn["notes"] == [
        "no processed audio: not in the process index (FileNotFoundError)",
        f"no processed audio: {tmp_path / 'process' / 'audio' / '001.npy'} at sample 0 (FileNotFoundError)",
        f"no processed audio: {store} at sample 12000 (ValueError)"]


def test_example_files_are_named_safely(tmp_path: Path) -> None:
    d = {name: tmp_path / "data" / name for name in ("ingest", "process", "split", "features")}
    d["out"] = tmp_path / "out"
    rows = pd.DataFrame({"id": ["a b/x:1", "a_b/x:1", "../up"], "clip_id": ["a b/x:1", "a_b/x:1", "../up"],
                         "label": ["a b", "a_b", ".."]})
    manifest = rows.assign(path="/raw/" + rows["id"], group=None, duration=1.0, sample_rate=8000, channels=1,
                           format="WAV", shard=0)
    write_csv(d["ingest"] / "manifest.csv", manifest)
    write_csv(d["ingest"] / "rejected.csv", pd.DataFrame(columns=["path", "id", "stage", "reason", "detail"]))
    (d["features"] / "shards").mkdir(parents=True)
    rows.to_parquet(d["features"] / "shards" / "000.parquet")  # no audio, no matrices: notes in the figures
    dataset_report(ingest_dir=d["ingest"], process_dir=d["process"], split_dir=d["split"], features_dir=d["features"],
                   out_dir=d["out"], dataset="odd", seed=0)
    figures = sorted(f.relative_to(d["out"]).as_posix() for f in d["out"].rglob("*.png"))
    # "a b" and "a_b" are two classes whose names become one: the second gets a suffix; ".." stays inside.
    assert figures == ["class_balance.png", "durations.png", "examples/_/up.png", "examples/a_b-2/a_b_x_1.png",
                       "examples/a_b/a_b_x_1.png"]


def test_examples_of_an_index_from_before_stores_get_a_note_not_a_crash(tmp_path: Path, drawn):
    """A process index without ``store, offset, frames`` (written before stores), or with them missing
    on some rows (old and new shard tables together), leaves the waveform panels with a note."""
    from soundstage.report import write_examples

    examples = pd.DataFrame({"id": ["a", "b"], "clip_id": ["a", "b"], "label": ["dog", "cat"], "group": ["a", "b"]})
    old = pd.DataFrame({"id": ["a", "b"], "path": ["x.wav", "y.wav"], "sample_rate": [16000, 16000]})
    mixed = old.assign(store=["000", None], offset=[0, None], frames=[10, None])
    for audio in (old, mixed):
        out = write_examples(examples, audio_dir=tmp_path / "audio", audio=audio, features_dir=tmp_path / "f",
                             saved=[], out_dir=tmp_path / "ex")
        assert sorted(out["file"]) == ["cat/b.png", "dog/a.png"]
        assert all((tmp_path / "ex" / f).is_file() for f in out["file"])
    assert not drawn["waveform"] and len(drawn["notes"]) == 4
    assert all(n.startswith("no processed audio") for n in drawn["notes"])
