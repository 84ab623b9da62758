"""Tests of soundstage.rejections: the one list of reasons, the run's summary and its verdict."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pandas as pd
import pytest

from soundstage import decode, ingest, rejections
from soundstage.io import write_csv
from soundstage.rejections import (
    NOT_COUNTED,
    REASONS,
    REJECTED_COLUMNS,
    TooManyRejectedError,
    check_rejected_share,
    files_considered,
    format_summary,
    read_rejected,
    rejection,
    summarize_rejections,
    summarize_run,
)

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "soundstage"


def row(path: str, stage: str, reason: str, clip_id: str | None = None) -> dict[str, str]:
    return rejection(path, clip_id if clip_id is not None else Path(path).stem, stage, reason, f"{path}: {reason}")


def table(*rows: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=REJECTED_COLUMNS)


# ---------------------------------------------------------------------------------------------
# The one list of reasons


def emitted_reasons() -> dict[str, set[str]]:
    """``{reason: {module, ...}}`` of every literal reason the package passes to ``rejection(...)``
    (4th argument) or ``AudioError(...)`` (2nd argument)."""
    found: dict[str, set[str]] = {}
    for source in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            position = {"rejection": 3, "AudioError": 1}.get(name)
            args = node.args
            if position is None or len(args) <= position:
                continue
            if isinstance(args[position], ast.Constant) and isinstance(args[position].value, str):
                found.setdefault(args[position].value, set()).add(source.name)
    return found


def test_every_reason_the_code_emits_is_in_the_list_and_back() -> None:
    emitted = emitted_reasons()
    # the scan sees every stage: ingest's walk, audio, process, features
    assert {"other_file", "no_class_folder", "truncated", "cannot_process"} <= set(emitted)
    assert "features.py" in emitted["unreadable"]
    unknown = {r: sorted(m) for r, m in emitted.items() if r not in REASONS}
    assert not unknown, f"reasons missing from soundstage.rejections.REASONS: {unknown}"
    assert set(emitted) == set(REASONS), f"listed but never emitted: {set(REASONS) - set(emitted)}"
    assert decode.REASONS | ingest.INGEST_REASONS <= set(REASONS)
    assert NOT_COUNTED <= set(REASONS)


def readme_reasons() -> dict[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^- `([a-z_]+)`: (.+)$", section, flags=re.MULTILINE))


def test_readme_lists_exactly_the_reasons() -> None:
    listed = readme_reasons()
    assert list(listed) == list(REASONS)  # the same reasons, in the same order
    assert listed == REASONS  # with the same one-line descriptions
    assert rejections.describe() in (REPO / "README.md").read_text(encoding="utf-8")


def test_every_description_is_one_line() -> None:
    for reason, text in REASONS.items():
        assert re.fullmatch(r"[a-z_]+", reason) and text and "\n" not in text, reason


def test_rejection_row_and_unknown_reason() -> None:
    assert rejection(Path("/d/a b.wav"), None, "ingest", "not_audio", "why") == {
        "path": "/d/a b.wav", "id": "", "stage": "ingest", "reason": "not_audio", "detail": "why"}
    with pytest.raises(ValueError, match="unknown rejection reason 'too_long'.*REASONS"):
        rejection("/d/a.wav", "a", "process", "too_long", "?")


# ---------------------------------------------------------------------------------------------
# Summary


def test_summary_counts_reasons_stages_and_examples() -> None:
    ingest_table = table(*(row(f"/raw/cls/t{k}.mp3", "ingest", "truncated") for k in range(5)),
                         row("/raw/cls/notes.txt", "ingest", "other_file"), row("/raw/loose.wav", "ingest",
                                                                                "no_class_folder"))
    process_table = table(row("/raw/cls/cut.flac", "process", "truncated", "cls/cut"),
                          row("/raw/cls/q.wav", "process", "silent", "cls/q"))
    s = summarize_rejections(considered=40, tables=[ingest_table, process_table])
    assert (s.considered, s.rejected) == (40, 8)  # other_file is listed, not counted
    assert s.share == pytest.approx(0.2)
    assert s.by_reason == {"truncated": 6, "no_class_folder": 1, "silent": 1, "other_file": 1}
    assert s.by_stage["truncated"] == {"ingest": 5, "process": 1}
    assert s.examples["truncated"] == [f"/raw/cls/t{k}.mp3" for k in range(3)]  # up to 3, in table order
    assert s.not_counted == {"other_file": 1}


def test_summary_counts_each_clip_once() -> None:
    segments = table(*(row(f"data/process/audio/cls/long__s{k}.wav", "features", "nonfinite", f"cls/long__s{k}")
                       for k in range(4)))
    duplicate = table(row("/raw/cls/a.wav", "ingest", "duplicate_id", "cls/a"))  # its twin a.flac is kept
    twin = table(row("/raw/cls/a.flac", "process", "silent", "cls/a"))  # ... and rejected later
    s = summarize_rejections(considered=10, tables=[duplicate, twin, segments, segments])  # a table read twice
    assert s.rejected == 3  # two files of cls/a (the duplicate and its twin), one segmented clip
    assert s.by_reason == {"nonfinite": 4, "duplicate_id": 1, "silent": 1}


def test_summary_of_nothing() -> None:
    s = summarize_rejections(considered=0, tables=[])
    assert (s.rejected, s.share, s.by_reason) == (0, 0.0, {})
    assert format_summary(s) == "rejected 0 of 0 files (0.0%)."
    check_rejected_share(s, max_share=0.0)


def test_files_considered() -> None:
    manifest = pd.DataFrame({"id": ["a", "b", "c"]})
    rejected = table(row("/r/x.wav", "ingest", "not_audio"), row("/r/y.txt", "ingest", "other_file"),
                     row("/r/z.wav", "ingest", "not_in_csv"))
    assert files_considered(manifest=manifest, ingest_rejected=rejected) == 4
    assert files_considered(manifest=manifest, ingest_rejected=table()) == 3


def test_format_summary_is_one_paragraph() -> None:
    s = summarize_rejections(considered=120, tables=[table(
        *(row(f"/r/t{k}.mp3", "ingest", "truncated") for k in range(1)),
        *(row(f"/r/c{k}.flac", "process", "truncated", f"c{k}") for k in range(3)),
        *(row(f"/r/s{k}.wav", "process", "silent", f"s{k}") for k in range(3)),
        row("/r/README.md", "ingest", "other_file"), row("/r/cover.jpg", "ingest", "other_file"))])
    assert format_summary(s) == ("rejected 7 of 120 files (5.8%): truncated 4 (ingest 1, process 3), "
                                 "silent 3 (process 3); also listed, not counted: other_file 2.")
    assert "\n" not in format_summary(s)


# ---------------------------------------------------------------------------------------------
# Verdict


def test_too_many_rejected_stops_with_counts_and_examples() -> None:
    """The real dataset's case: 9698 of 9750 MP3s rejected as truncated, and the run went on."""
    rows = [row(f"/raw/inst/s{k:04d}.mp3", "ingest", "truncated") for k in range(60)]
    rows += [row(f"/raw/inst/q{k}.wav", "process", "silent", f"inst/q{k}") for k in range(2)]
    s = summarize_rejections(considered=100, tables=[table(*rows)])
    with pytest.raises(TooManyRejectedError) as err:
        check_rejected_share(s, max_share=0.05)
    message = str(err.value)
    assert message.startswith("rejected 62 of 100 files (62.0%), more than data.max_rejected_share = 0.05 (5.0%)")
    assert "truncated (ingest 60):" in message and "silent (process 2):" in message
    assert REASONS["truncated"] in message
    assert [line.strip() for line in message.splitlines() if "e.g." in line] == [
        "e.g. /raw/inst/s0000.mp3", "e.g. /raw/inst/s0001.mp3", "e.g. /raw/inst/s0002.mp3",
        "e.g. /raw/inst/q0.wav", "e.g. /raw/inst/q1.wav"]
    assert "raise data.max_rejected_share in params.yaml" in message
    assert isinstance(err.value, ValueError) and err.value.summary is s and err.value.max_share == 0.05
    back = pickle.loads(pickle.dumps(err.value))
    assert str(back) == message


@pytest.mark.parametrize(("rejected", "max_share", "stops"), [
    (5, 0.05, False),  # exactly at the limit: goes on
    (6, 0.05, True),
    (0, 0.0, False),
    (1, 0.0, True),
    (100, 1.0, False),  # 1 never stops
])
def test_threshold_boundaries(rejected: int, max_share: float, stops: bool) -> None:
    s = summarize_rejections(considered=100, tables=[table(*(row(f"/r/{k}.wav", "ingest", "not_audio")
                                                             for k in range(rejected)))])
    if stops:
        with pytest.raises(TooManyRejectedError):
            check_rejected_share(s, max_share=max_share)
    else:
        check_rejected_share(s, max_share=max_share)


def test_not_counted_reasons_never_stop_a_run() -> None:
    s = summarize_rejections(considered=10, tables=[table(*(row(f"/r/{k}.txt", "ingest", "other_file")
                                                            for k in range(50)))])
    assert s.rejected == 0
    check_rejected_share(s, max_share=0.0)


def test_threshold_out_of_range_names_the_key() -> None:
    s = summarize_rejections(considered=1, tables=[])
    with pytest.raises(ValueError, match=r"data\.max_rejected_share: must lie in \[0, 1\]"):
        check_rejected_share(s, max_share=1.5)


# ---------------------------------------------------------------------------------------------
# Reading a run's tables


def test_summarize_run_reads_every_stage(tmp_path: Path) -> None:
    ingest_dir, process_dir, features_dir = (tmp_path / s for s in ("ingest", "process", "features"))
    write_csv(ingest_dir / "manifest.csv", pd.DataFrame({"id": [f"c{k}" for k in range(18)]}))
    write_csv(ingest_dir / "rejected.csv", table(row("/r/x.mp3", "ingest", "truncated"),
                                                 row("/r/y.txt", "ingest", "other_file")))
    write_csv(process_dir / "shards" / "000.rejected.csv", table(row("/r/c1.wav", "process", "silent", "c1")))
    write_csv(process_dir / "shards" / "001.rejected.csv", table())
    write_csv(process_dir / "shards" / "007.rejected.csv", table(row("/r/old.wav", "process", "silent", "old")))
    write_csv(features_dir / "shards" / "001.rejected.csv",
              table(row("data/process/audio/c2.wav", "features", "nonfinite", "c2")))
    s = summarize_run(ingest_dir=ingest_dir, process_dir=process_dir, features_dir=features_dir, n_shards=2)
    assert (s.considered, s.rejected) == (19, 3)  # 18 clips + 1 counted ingest rejection; shard 007 is stale
    assert s.by_reason == {"nonfinite": 1, "silent": 1, "truncated": 1, "other_file": 1}
    everything = read_rejected(ingest_dir=ingest_dir, process_dir=process_dir, features_dir=features_dir)
    assert "/r/old.wav" in set(everything["path"])  # without n_shards every shard table counts
    missing = read_rejected(ingest_dir=tmp_path / "no", process_dir=tmp_path / "no", features_dir=tmp_path / "no")
    assert list(missing.columns) == REJECTED_COLUMNS and missing.empty
