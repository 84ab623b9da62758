"""Tests of soundstage.ingest: every layout, every format, every bad input, odd paths."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from audio_fixtures import BAD_FILE_REASONS, PROBE_DETECTS, make_bad_files, write_tone

from soundstage import decode
from soundstage.ingest import (
    AUTO_SECONDS_PER_BYTE,
    AUTO_SECONDS_PER_FILE,
    AUTO_TWO_SHARDS_SECONDS,
    HEADER_BYTES,
    INGEST_REASONS,
    MANIFEST_COLUMNS,
    IngestWarning,
    auto_shards,
    fingerprint_tree,
    ingest,
    is_demo,
    resolve_n_shards,
    scan_tree,
)
from soundstage.rejections import REASONS, REJECTED_COLUMNS, shard_of

EXTS = ["wav", "flac", "ogg", "mp3", "au", "snd", "aiff", "aif"]


def tone(path: Path, **kw) -> Path:
    kw.setdefault("sr", 8000)
    kw.setdefault("duration", 0.1)
    return write_tone(path, **kw)


def run(root: Path, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    kw.setdefault("extensions", EXTS)
    return ingest(root=root, **kw)


def reasons(rejected: pd.DataFrame) -> dict[str, str]:
    """``{file name: reason}`` of a rejected table (each file at most once)."""
    names = rejected["path"].map(lambda p: Path(p).name)
    assert not names.duplicated().any(), rejected
    return dict(zip(names, rejected["reason"]))


def assert_details_name_files(rejected: pd.DataFrame) -> None:
    assert list(rejected.columns) == REJECTED_COLUMNS
    assert set(rejected["stage"]) <= {"ingest"}
    for row in rejected.to_dict("records"):
        assert row["path"] in row["detail"], row


# ---------------------------------------------------------------------------------------------
# Folder layout


def test_folder_any_depth_gtzan(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    for label in ("blues", "jazz"):
        for i in range(2):
            tone(root / "genres" / label / f"{label}.{i:05d}.au", fmt="AU", subtype="PCM_16")
    manifest, rejected = run(root, label_level=-1, n_shards=4)
    assert rejected.empty
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["id"].tolist() == ["genres/blues/blues.00000", "genres/blues/blues.00001",
                                       "genres/jazz/jazz.00000", "genres/jazz/jazz.00001"]
    assert manifest["label"].tolist() == ["blues", "blues", "jazz", "jazz"]
    assert manifest["format"].eq("AU").all() and manifest["group"].isna().all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in manifest["path"])
    assert manifest["shard"].tolist() == [shard_of(i, 4) for i in manifest["id"]]

    # label_level counts from the top: 0 is 'genres', 1 the genre
    manifest, _ = run(root, label_level=1)
    assert manifest["label"].tolist() == ["blues", "blues", "jazz", "jazz"]
    manifest, _ = run(root, label_level=0)
    assert set(manifest["label"]) == {"genres"}



def test_headers_are_read_ahead_of_the_probe(tmp_path: Path, advised: list[str]) -> None:
    """Each candidate's first HEADER_BYTES are asked of the kernel (once, in order) before it is probed."""
    root = tmp_path / "raw"
    paths = [tone(root / label / f"{label}{i}.wav") for label in ("a", "b") for i in range(10)]
    (root / "a" / "broken.wav").write_bytes(b"RIFF junk")  # rejected by the probe, still read ahead
    manifest, rejected = run(root)
    assert len(manifest) == 20 and rejected["reason"].tolist() == ["not_audio"]
    expected = sorted(os.path.realpath(p) for p in [*paths, root / "a" / "broken.wav"])
    assert sorted(advised) == expected and len(advised) == len(set(advised))
    assert set(advised.lengths) == {HEADER_BYTES}

def test_folder_group_regex(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for label, speaker, take in [("yes", "anna", 1), ("yes", "bob", 1), ("no", "anna", 2), ("no", "carl", 1)]:
        tone(root / label / f"{speaker}_{take}.wav")
    tone(root / "no" / "nospeaker.wav")
    with pytest.warns(IngestWarning, match="does not match 1 of the 5 file"):
        manifest, rejected = run(root, group_regex=r"/(?P<group>[a-z]+)_\d+$")
    assert rejected.empty
    groups = dict(zip(manifest["id"], manifest["group"]))
    assert groups == {"no/anna_2": "anna", "no/carl_1": "carl", "no/nospeaker": None, "yes/anna_1": "anna",
                      "yes/bob_1": "bob"}


DEMO_GROUP_REGEX = r"^[^/]+/(?P<group>[a-z_]+\.\d{2})\.\d{3}$"  # params.yaml's, for the demo


def speakers_dataset(root: Path, names: list[str]) -> Path:
    """``root/<label>/<name>.wav`` for labels yes and no: a user's folder dataset."""
    for label in ("yes", "no"):
        for name in names:
            tone(root / label / f"{name}.wav")
    return root


def test_group_regex_matching_no_file_warns(tmp_path: Path) -> None:
    """The demo's pattern, shipped in params.yaml, finds nothing in a user's folders: said, not silent."""
    root = speakers_dataset(tmp_path / "data", ["anna_1", "bob_1", "bob_2"])
    with pytest.warns(IngestWarning) as caught:
        manifest, rejected = run(root, group_regex=DEMO_GROUP_REGEX)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert f"data.folder.group_regex '{DEMO_GROUP_REGEX}'" in msg  # as written in params.yaml
    assert "matches no file" in msg and "none of the 6 files" in msg
    assert "'no/anna_1'" in msg  # an example path below the root, as the pattern sees it
    assert "null" in msg
    assert caught[0].filename == __file__  # points at the caller of ingest()
    assert rejected.empty and len(manifest) == 6 and manifest["group"].isna().all()


def test_group_regex_matching_some_files_warns_with_counts(tmp_path: Path) -> None:
    root = speakers_dataset(tmp_path / "data", ["anna_1", "bob_1", "take3"])
    with pytest.warns(IngestWarning) as caught:
        manifest, _ = run(root, group_regex=r"/(?P<group>[a-z]+)_\d+$")
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert re.search(r"data\.folder\.group_regex .* does not match 2 of the 6 files", msg), msg
    assert "'no/take3'" in msg and "each is its own group" in msg
    assert manifest.set_index("id")["group"].isna().to_dict() == {
        "no/anna_1": False, "no/bob_1": False, "no/take3": True, "yes/anna_1": False, "yes/bob_1": False,
        "yes/take3": True}


@pytest.mark.parametrize("group_regex", [r"/(?P<group>[a-z]+)_\d+$", None])
def test_group_regex_matching_every_file_or_none_given_is_quiet(tmp_path: Path, group_regex: str | None) -> None:
    root = speakers_dataset(tmp_path / "data", ["anna_1", "bob_1", "bob_2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest, _ = run(root, group_regex=group_regex)
    assert manifest["group"].isna().all() == (group_regex is None)


def test_group_regex_is_only_read_by_the_folder_layout(tmp_path: Path) -> None:
    root = tmp_path / "digits"
    tone(root / "3_anna_0.wav")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest, _ = run(root, layout="regex", pattern=r"(?P<label>\d)_(?P<group>[a-z]+)_\d+\.wav",
                          group_regex=DEMO_GROUP_REGEX)
    assert manifest["group"].tolist() == ["anna"]


def test_cli_ingest_prints_the_group_regex_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    from soundstage.cli import main

    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    assert params["data"]["folder"]["group_regex"] == DEMO_GROUP_REGEX  # what a user starts from
    params["data"]["root"] = str(speakers_dataset(tmp_path / "data", ["anna_1", "bob_1"]))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert main(["--params", "params.yaml", "ingest", "--out-dir", "out"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^ingest: WARNING: data\.folder\.group_regex .* matches no file", err, re.M), err
    assert (tmp_path / "out" / "manifest.csv").is_file()


def test_folder_files_without_class_folder_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "data"
    tone(root / "cat" / "a.wav")
    loose = tone(root / "loose.wav")
    manifest, rejected = run(root)
    assert manifest["id"].tolist() == ["cat/a"]
    assert reasons(rejected) == {"loose.wav": "no_class_folder"}
    assert "directly under data.root" in rejected["detail"][0] and str(loose) in rejected["detail"][0]
    assert rejected["id"][0] == "loose"

    # a label level deeper than the file's folders
    manifest, rejected = run(root, label_level=-2)
    assert manifest.empty and set(rejected["reason"]) == {"no_class_folder"} and len(rejected) == 2
    assert_details_name_files(rejected)


def test_other_extensions_are_listed_and_hidden_files_skipped(tmp_path: Path) -> None:
    root = tmp_path / "data"
    tone(root / "cat" / "a.WAV")  # extensions are case-insensitive
    (root / "cat" / "README.txt").write_text("notes")
    (root / "cat" / "cover.jpg").write_bytes(b"\xff\xd8")
    (root / "cat" / "purr.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    (root / "cat" / "LICENSE").write_text("CC-BY")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    (root / "cat" / "._a.wav").write_bytes(b"\0\5\26\7")  # macOS AppleDouble twin
    tone(root / ".hidden" / "b.wav")
    manifest, rejected = run(root)
    assert manifest["id"].tolist() == ["cat/a"]
    # every skipped file is listed, naming the file; hidden files are not data and stay unlisted
    assert reasons(rejected) == {"README.txt": "other_file", "cover.jpg": "other_file", "LICENSE": "other_file",
                                 "purr.m4a": "unsupported_extension"}
    assert_details_name_files(rejected)
    m4a = rejected.set_index("reason").loc["unsupported_extension"]
    assert m4a["id"] == "cat/purr" and ".m4a is not in data.extensions" in m4a["detail"]
    assert manifest.attrs["ignored"] == {"(none)": 1, ".jpg": 1, ".m4a": 1, ".txt": 1}
    # listing m4a makes it a candidate: probed, and rejected for its content
    manifest, rejected = run(root, extensions=EXTS + ["m4a"])
    assert reasons(rejected)["purr.m4a"] == "undecodable"


def test_csv_under_root_is_not_listed_as_a_stray_file(tmp_path: Path) -> None:
    root = tmp_path / "speech"
    tone(root / "a.wav")
    (root / "notes.txt").write_text("recorded in 2020")
    meta = write_meta(root / "meta.csv", [{"path": "a.wav", "label": "x"}])
    manifest, rejected = run(root, layout="csv", csv_path=meta)
    assert manifest["id"].tolist() == ["a"]
    assert reasons(rejected) == {"notes.txt": "other_file"}


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "dog"
    tone(outside / "d.wav")
    root = tmp_path / "data"
    tone(root / "cat" / "c.wav")
    (root / "dog").symlink_to(outside, target_is_directory=True)
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)  # must not recurse forever
    manifest, rejected = run(root)
    assert manifest["id"].tolist() == ["cat/c", "dog/d"] and rejected.empty


def test_unlistable_folder_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    tone(root / "cat" / "a.wav")
    locked = root / "dog"
    tone(locked / "b.wav")
    real_scandir = os.scandir

    def scandir(path="."):  # chmod 000 does not stop root: make the OS refuse the listing
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    manifest, rejected = run(root)
    assert manifest["id"].tolist() == ["cat/a"]
    assert rejected["reason"].tolist() == ["unreadable"]
    assert str(locked) in rejected["detail"][0] and "cannot list folder" in rejected["detail"][0]


# ---------------------------------------------------------------------------------------------
# Every format, rate and channel count

FORMAT_CASES = [  # (format, subtype, extension, rate, channels)
    ("WAV", "PCM_U8", "wav", 8000, 1),
    ("WAV", "PCM_16", "wav", 16000, 2),
    ("WAV", "PCM_24", "wav", 96000, 8),
    ("WAV", "PCM_32", "wav", 44100, 1),
    ("WAV", "FLOAT", "wav", 22050, 6),
    ("WAV", "DOUBLE", "wav", 48000, 2),
    ("FLAC", "PCM_16", "flac", 96000, 2),
    ("FLAC", "PCM_24", "flac", 11025, 8),
    ("OGG", "VORBIS", "ogg", 48000, 2),
    ("OGG", "VORBIS", "ogg", 8000, 1),
    ("MP3", "MPEG_LAYER_III", "mp3", 44100, 2),
    ("MP3", "MPEG_LAYER_III", "mp3", 8000, 1),
    ("AU", "PCM_16", "au", 8000, 1),
    ("AU", "PCM_16", "snd", 32000, 4),
    ("AIFF", "PCM_16", "aiff", 96000, 8),
    ("AIFF", "PCM_24", "aif", 16000, 3),
]


def test_every_format_is_probed(tmp_path: Path) -> None:
    root = tmp_path / "formats"
    expected = {}
    for fmt, subtype, ext, sr, ch in FORMAT_CASES:
        name = f"{subtype.lower()}_{sr}_{ch}ch"
        tone(root / fmt.lower() / f"{name}.{ext}", sr=sr, channels=ch, duration=0.25, fmt=fmt, subtype=subtype)
        expected[f"{fmt.lower()}/{name}"] = (fmt, subtype, sr, ch)
    manifest, rejected = run(root)
    assert rejected.empty, rejected.to_dict("records")
    assert set(manifest["id"]) == set(expected)
    for row in manifest.to_dict("records"):
        fmt, subtype, sr, ch = expected[row["id"]]
        assert (row["format"], row["sample_rate"], row["channels"], row["label"]) == (fmt, sr, ch, fmt.lower())
        tol = 0.06 if subtype in ("VORBIS", "MPEG_LAYER_III") else 1e-6
        assert row["duration"] == pytest.approx(round(0.25 * sr) / sr, abs=tol), row


# ---------------------------------------------------------------------------------------------
# Bad files


@pytest.fixture
def bad_root(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "bad data"
    files = make_bad_files(root / "cls")
    shutil.rmtree(root / "cls" / "_full")  # the intact originals of the truncated files
    return root, files


def test_bad_files_each_rejected_once(bad_root: tuple[Path, dict]) -> None:
    root, files = bad_root
    exts = EXTS + ["m4a"]
    manifest, rejected = ingest(root=root, extensions=exts)
    assert_details_name_files(rejected)
    got = reasons(rejected)
    for name, (path, reason) in files.items():
        if name == "directory_named_wav":
            assert path.name not in got  # a folder, even named x.wav, is walked into, not probed
        elif name in PROBE_DETECTS:
            assert got.pop(path.name) == reason, name
        else:  # decoded (or found good) later, in process
            assert path.name in set(manifest["path"].map(lambda p: Path(p).name)), name
    assert got == {}
    # unicode and spaces: the id keeps them
    assert "cls/sous-dossier é/ünïcødé tone 音 (1)" in set(manifest["id"])
    assert set(manifest.loc[manifest["id"].str.contains("sous"), "label"]) == {"sous-dossier é"}


def test_unreadable_file_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # root ignores chmod 000, so make the OS refuse the read (as audio's own tests do)
    root = tmp_path / "data"
    good = tone(root / "cat" / "good.wav")
    locked = tone(root / "cat" / "locked.wav")
    real_open = open

    def guarded(file, *args, **kwargs):
        if os.fspath(file) == str(locked):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(decode, "open", guarded, raising=False)
    manifest, rejected = run(root)
    assert manifest["path"].tolist() == [str(good)]
    assert reasons(rejected) == {"locked.wav": "unreadable"}
    assert_details_name_files(rejected)


def test_fifo_and_dangling_link_rejected(tmp_path: Path) -> None:
    root = tmp_path / "data"
    tone(root / "cat" / "ok.wav")
    os.mkfifo(root / "cat" / "pipe.wav")
    (root / "cat" / "gone.wav").symlink_to(root / "nowhere.wav")
    manifest, rejected = run(root)  # must not block on the FIFO
    assert manifest["id"].tolist() == ["cat/ok"]
    assert reasons(rejected) == {"pipe.wav": "unreadable", "gone.wav": "not_found"}
    gone = rejected.set_index("reason").loc["not_found", "detail"]
    assert "broken symbolic link" in gone and "nowhere.wav" in gone


def test_duplicate_clip_ids(tmp_path: Path) -> None:
    root = tmp_path / "data"
    flac = tone(root / "cat" / "a.flac", fmt="FLAC")
    wav = tone(root / "cat" / "a.wav")
    tone(root / "cat" / "b.wav")
    manifest, rejected = run(root)
    assert manifest["id"].tolist() == ["cat/a", "cat/b"]
    assert manifest.loc[0, "path"] == str(flac)  # the first in sorted order is kept
    assert reasons(rejected) == {"a.wav": "duplicate_id"}
    assert str(wav) in rejected["detail"][0] and str(flac) in rejected["detail"][0]


def test_duplicate_whose_twin_is_bad_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.flac").write_text("not audio")
    wav = tone(root / "cat" / "a.wav")
    manifest, rejected = run(root)
    assert manifest["path"].tolist() == [str(wav)]
    assert reasons(rejected) == {"a.flac": "not_audio"}


def test_spaces_and_non_ascii_paths(tmp_path: Path) -> None:
    root = tmp_path / "my data ü"
    paths = [tone(root / "chant d'oiseau" / "été 01.wav"), tone(root / "鳥" / "歌 (2).flac", fmt="FLAC"),
             tone(root / "Ελληνικά" / "ñandú #3.ogg", fmt="OGG", subtype="VORBIS")]
    manifest, rejected = run(root)
    assert rejected.empty
    assert sorted(manifest["path"]) == sorted(map(str, paths))
    assert set(manifest["label"]) == {"chant d'oiseau", "鳥", "Ελληνικά"}
    assert "鳥/歌 (2)" in set(manifest["id"])


# ---------------------------------------------------------------------------------------------
# CSV layout


def write_meta(path: Path, rows: list[dict], *, sep: str = ",", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = pd.DataFrame(rows).to_csv(index=False, sep=sep)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def test_csv_layout_columns_relative_and_absolute(tmp_path: Path) -> None:
    root = tmp_path / "speech"
    a = tone(root / "wavs" / "a 1.wav")
    b = tone(tmp_path / "other place" / "b.flac", fmt="FLAC")
    meta = write_meta(root / "meta.csv", [
        {"file": "wavs/a 1.wav", "emotion": "happy", "speaker": "s1", "text": "hello there"},
        {"file": str(b), "emotion": "sad", "speaker": "", "text": "bye"},
    ], bom=True)
    manifest, rejected = run(root, layout="csv", csv_path=meta, path_column="file", label_column="emotion",
                             group_column="speaker", transcript_column="text")
    assert rejected.empty
    assert list(manifest.columns) == MANIFEST_COLUMNS + ["transcript"]
    rows = {r["path"]: r for r in manifest.to_dict("records")}
    assert rows[str(a)]["id"] == "wavs/a 1" and rows[str(a)]["label"] == "happy"
    assert rows[str(a)]["group"] == "s1" and rows[str(a)]["transcript"] == "hello there"
    assert rows[str(b)]["label"] == "sad" and rows[str(b)]["group"] is None
    assert rows[str(b)]["id"] == str(b.with_suffix("")).lstrip("/")


def test_csv_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for name in ("a", "b", "c", "unlisted"):
        tone(root / "audio" / f"{name}.wav")
    meta = write_meta(root / "meta.csv", [
        {"path": "audio/a.wav", "label": "x"},
        {"path": "audio/b.wav", "label": "  "},          # missing label
        {"path": "audio/ghost.wav", "label": "x"},       # missing file
        {"path": "", "label": "y"},                      # missing path
        {"path": "audio/c.wav", "label": "y"},
        {"path": "audio/a.wav", "label": "y"},           # the same file again, other label
    ])
    manifest, rejected = run(root, layout="csv", csv_path=meta)
    assert manifest["id"].tolist() == ["audio/a", "audio/c"]
    assert manifest["label"].tolist() == ["x", "y"]
    by_reason = dict(zip(rejected["reason"], rejected["detail"]))
    assert sorted(rejected["reason"]) == ["duplicate_id", "missing_file", "missing_label", "missing_path",
                                          "not_in_csv"]
    assert "b.wav" in by_reason["missing_label"] and "row 3" in by_reason["missing_label"]
    assert "ghost.wav" in by_reason["missing_file"] and "row 4" in by_reason["missing_file"]
    assert "row 5" in by_reason["missing_path"]
    assert "a.wav" in by_reason["duplicate_id"] and "labels differ" in by_reason["duplicate_id"]
    assert "unlisted.wav" in by_reason["not_in_csv"]
    assert_details_name_files(rejected)


def test_csv_in_meta_folder_paths_below_root_or_by_name(tmp_path: Path) -> None:
    # ESC-50 style: meta/esc50.csv names 'x.wav', the files are in audio/
    root = tmp_path / "esc"
    tone(root / "audio" / "1-1-A-0.wav")
    tone(root / "audio" / "sub" / "2-1-A-1.wav")
    meta = write_meta(root / "meta" / "esc50.tsv",
                      [{"filename": "audio/1-1-A-0.wav", "category": "dog"},
                       {"filename": "2-1-A-1.wav", "category": "rain"},
                       {"filename": "audio\\sub\\2-1-A-1.wav", "category": "rain"}], sep="\t")
    manifest, rejected = run(root, layout="csv", csv_path=meta, path_column="filename", label_column="category")
    assert manifest["id"].tolist() == ["audio/1-1-A-0", "audio/sub/2-1-A-1"]
    assert manifest["label"].tolist() == ["dog", "rain"]
    assert rejected["reason"].tolist() == ["duplicate_id"]  # the Windows path names the same file


def test_csv_unrelated_root_is_not_flagged(tmp_path: Path) -> None:
    tone(tmp_path / "unrelated" / "cls" / "z.wav")
    a = tone(tmp_path / "ds" / "a.wav")
    meta = write_meta(tmp_path / "ds" / "m.csv", [{"path": "a.wav", "label": "x"}])
    manifest, rejected = run(tmp_path / "unrelated", layout="csv", csv_path=meta)
    assert manifest["path"].tolist() == [str(a)] and rejected.empty
    manifest, rejected = run(tmp_path / "missing root", layout="csv", csv_path=meta)
    assert len(manifest) == 1 and rejected.empty


def test_csv_missing_column_names_key(tmp_path: Path) -> None:
    meta = write_meta(tmp_path / "m.csv", [{"path": "a.wav", "label": "x"}])
    with pytest.raises(ValueError, match=r"data\.csv\.group_column: column 'speaker'"):
        run(tmp_path, layout="csv", csv_path=meta, group_column="speaker")
    with pytest.raises(FileNotFoundError, match="data.csv.path"):
        run(tmp_path, layout="csv", csv_path=tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------
# Regex layout

FSDD = r"(?P<label>\d)_(?P<group>[a-z]+)_\d+\.wav"


def test_regex_layout(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    for name in ("0_jackson_0.wav", "0_jackson_1.wav", "7_theo_12.wav", "9_nicolas_3.wav"):
        tone(root / name)
    tone(root / "readme_take.wav")
    tone(root / "3_Lucas_1.wav")  # upper case: not [a-z]+
    manifest, rejected = run(root, layout="regex", pattern=FSDD)
    assert manifest["id"].tolist() == ["0_jackson_0", "0_jackson_1", "7_theo_12", "9_nicolas_3"]
    assert manifest["label"].tolist() == ["0", "0", "7", "9"]
    assert manifest["group"].tolist() == ["jackson", "jackson", "theo", "nicolas"]
    assert reasons(rejected) == {"readme_take.wav": "no_match", "3_Lucas_1.wav": "no_match"}
    assert all("data.regex.pattern" in d for d in rejected["detail"])
    assert_details_name_files(rejected)


def test_regex_without_extension_or_group(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    tone(root / "dog-01.flac", fmt="FLAC")
    tone(root / "nested" / "cat-02.wav")
    manifest, rejected = run(root, layout="regex", pattern=r"(?P<label>[a-z]+)-\d+")
    assert rejected.empty
    assert dict(zip(manifest["id"], manifest["label"])) == {"dog-01": "dog", "nested/cat-02": "cat"}
    assert manifest["group"].isna().all()


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.root"):
        run(tmp_path / "absent")
    with pytest.raises(ValueError, match="data.layout"):
        run(tmp_path, layout="tree")
    with pytest.raises(ValueError, match="data.regex.pattern"):
        run(tmp_path, layout="regex")


def test_fingerprint_changes_with_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    a = tone(root / "cat" / "a.wav")
    first = fingerprint_tree(root, EXTS)
    assert fingerprint_tree(root, EXTS) == first
    os.utime(a, ns=(1, 1))
    second = fingerprint_tree(root, EXTS)
    tone(root / "cat" / "deep" / "b.wav")
    third = fingerprint_tree(root, EXTS)
    (root / "cat" / "notes.txt").write_text("listed as other_file by ingest: its table changes")
    fourth = fingerprint_tree(root, EXTS)
    (root / "cat" / ".DS_Store").write_bytes(b"\0")  # hidden: not data
    assert len({first, second, third, fourth}) == 4 and fingerprint_tree(root, EXTS) == fourth


def test_known_bad_reasons_are_covered() -> None:
    # every probe-detectable fixture reason is an audio reason, and every reason is in the one list
    assert {BAD_FILE_REASONS[n] for n in PROBE_DETECTS} <= decode.REASONS
    assert decode.REASONS | INGEST_REASONS <= set(REASONS)


def test_shared_table_helpers_are_reexported() -> None:
    # process, features and the CLI import these from soundstage.ingest
    from soundstage import ingest as ingest_module
    from soundstage import rejections

    for name in ("REJECTED_COLUMNS", "rejection", "shard_of"):
        assert getattr(ingest_module, name) is getattr(rejections, name)


# ---------------------------------------------------------------------------------------------
# Metadata kept for split.mode column


def test_regex_named_groups_become_text_columns(tmp_path: Path) -> None:
    from soundstage.io import read_csv, write_csv

    root = tmp_path / "recordings"
    for name in ("0_jackson_0.wav", "7_theo_12.wav", "9_nicolas_07.wav"):
        tone(root / name)
    # 'path' is a manifest column: the group becomes meta_path (here never matched: empty)
    pattern = r"(?P<label>\d+)_(?P<group>[a-z]+)_(?P<take>\d+)(?P<path>-x)?"
    manifest, rejected = run(root, layout="regex", pattern=pattern)
    assert rejected.empty
    assert list(manifest.columns) == MANIFEST_COLUMNS + ["take", "meta_path"]
    assert dict(zip(manifest["id"], manifest["take"])) == {"0_jackson_0": "0", "7_theo_12": "12", "9_nicolas_07": "07"}
    assert manifest["meta_path"].isna().all() and manifest["group"].tolist() == ["jackson", "theo", "nicolas"]
    write_csv(tmp_path / "manifest.csv", manifest)
    assert read_csv(tmp_path / "manifest.csv", text=["take"])["take"].tolist() == ["0", "12", "07"]  # text: 07 kept
    (tmp_path / "empty").mkdir()
    manifest, _ = run(tmp_path / "empty", layout="regex", pattern=pattern)
    assert manifest.empty and list(manifest.columns) == MANIFEST_COLUMNS + ["take", "meta_path"]
    manifest, _ = run(tmp_path / "recordings", layout="regex", pattern=FSDD)  # no extra group: no extra column
    assert list(manifest.columns) == MANIFEST_COLUMNS


def test_csv_metadata_columns_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "esc"
    rows = []
    for k in range(6):
        name = f"{1 + k % 5}-10{k}-A-{k % 2}.wav"
        tone(root / "audio" / name)
        rows.append({"filename": name, "fold": str(1 + k % 5), "target": str(k % 2), "category": ["dog", "rain"][k % 2],
                     "esc10": "True", "src_file": f"10{k}", "take": "A", "duration": "5.0", "id": f"x{k}"})
    rows[0]["fold"] = ""
    meta = write_meta(root / "meta" / "esc50.csv", rows)
    manifest, rejected = run(root / "audio", layout="csv", csv_path=meta, path_column="filename",
                             label_column="category", group_column="src_file")
    assert rejected.empty
    # every other column, as text; names of manifest columns get a meta_ prefix
    assert list(manifest.columns) == MANIFEST_COLUMNS + ["fold", "target", "esc10", "take", "meta_duration", "meta_id"]
    by_name = {Path(r["path"]).name: r for r in manifest.to_dict("records")}
    assert {n: r["fold"] for n, r in by_name.items()} == {r["filename"]: r["fold"] for r in rows}
    assert {n: r["meta_id"] for n, r in by_name.items()} == {r["filename"]: r["id"] for r in rows}
    assert manifest["meta_duration"].eq("5.0").all() and manifest["duration"].lt(1).all()
    # a transcript column is a manifest column only when data.csv.transcript_column names it
    manifest, _ = run(root / "audio", layout="csv", csv_path=meta, path_column="filename", label_column="category",
                      transcript_column="take")
    assert list(manifest.columns) == MANIFEST_COLUMNS + ["transcript", "fold", "target", "esc10", "src_file",
                                                         "meta_duration", "meta_id"]


def test_scan_counts_audio_files_and_bytes_and_keeps_the_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "data"
    audio = [tone(root / "cat" / "a.wav"), tone(root / "dog" / "deep" / "b.flac"), tone(root / "dog" / "c.wav")]
    (root / "cat" / "notes.txt").write_text("not audio: in the fingerprint, not in the size")
    (root / "cat" / ".hidden.wav").write_bytes(b"\0" * 100)
    scan = scan_tree(root, EXTS)
    assert scan.n_audio == 3 and scan.audio_bytes == sum(p.stat().st_size for p in audio)
    assert scan.fingerprint == fingerprint_tree(root, EXTS)
    empty = scan_tree(tmp_path / "missing", EXTS)
    assert (empty.n_audio, empty.audio_bytes) == (0, 0)


@pytest.mark.parametrize(("files", "size", "seconds", "expected"), [
    (0, 0, 8.0, 1),                       # nothing: one shard
    (36, 36 * 64_000, 8.0, 1),            # a test's tiny demo: ~0.1 s of work
    (192, 192 * 264_600, 8.0, 2),         # the demo: ~1.1 s of work, two cores share it
    (100, 100 * 1_323_000, 8.0, 2),       # 100 x 30 s at 22.05 kHz: ~2.2 s
    (4, 4 * 26_460_000, 8.0, 2),          # 4 x 10 min at 22.05 kHz: ~1.6 s
    (3000, 3000 * 7_084, 8.0, 2),         # spoken digits, 8 kHz: ~6.3 s
    (10_000, 10_000 * 15_000, 8.0, 4),    # ~22 s
    (100_000, 100_000 * 15_000, 8.0, 32),  # ~220 s
    (1000, 1000 * 1_323_000, 8.0, 4),     # 1000 x 30 s at 22.05 kHz: ~22 s
    (10_000, 10_000 * 15_000, 4.0, 8),    # smaller jobs: 8 rather than 4
    (10_000, 10_000 * 15_000, 60.0, 2),   # a cluster's larger jobs: 2 rather than 4
    (192, 192 * 264_600, 60.0, 2),        # from 1 s of work on, two share it whatever the jobs' size
    (36, 36 * 64_000, 0.2, 2),            # tiny jobs: from a quarter of one on
    (10**9, 10**15, 8.0, 512),            # the ceiling
])
def test_auto_shards_is_the_least_power_of_two_within_the_work_per_shard(files, size, seconds, expected) -> None:
    n = auto_shards(files, size, seconds)
    assert n == expected
    work = files * AUTO_SECONDS_PER_FILE + size * AUTO_SECONDS_PER_BYTE
    two_from = min(AUTO_TWO_SHARDS_SECONDS, seconds / 4)
    assert n == 512 or work / n <= seconds            # each shard within the target...
    assert n == 1 or work / (n // 2) > seconds or (n == 2 and work > two_from)  # ...no fewer would do
    assert n > 1 or work <= two_from                  # enough work for two: two share it


def test_auto_shards_grows_in_steps_with_the_data() -> None:
    counts = [auto_shards(n, n * 15_000) for n in range(0, 200_001, 500)]
    assert counts == sorted(counts) and len(set(counts)) <= 9  # doubling steps, never back down


def test_resolve_n_shards(tmp_path: Path) -> None:
    from soundstage.config import validate_params

    p = validate_params({"sharding": {"n_shards": 6}})
    assert resolve_n_shards(p) == 6  # a number is taken as it is, without a walk
    demo = validate_params({"sharding": {"n_shards": "auto", "auto_seconds": 0.1}})
    assert is_demo(demo)
    d = demo["demo"]
    expected = auto_shards(d["n_classes"] * d["clips_per_class"],
                           d["n_classes"] * d["clips_per_class"] * int(d["duration"] * d["sample_rate"] * 2), 0.1)
    assert resolve_n_shards(demo) == expected > 1  # sized from the demo params: data/demo need not exist
    root = tmp_path / "data"
    for i in range(12):
        tone(root / f"c{i % 3}" / f"{i}.wav", duration=0.5)
    user = validate_params({"data": {"root": str(root)}, "sharding": {"n_shards": "auto", "auto_seconds": 0.01}})
    assert not is_demo(user)
    scan = scan_tree(root, EXTS)
    assert resolve_n_shards(user) == resolve_n_shards(user, scan) == auto_shards(scan.n_audio, scan.audio_bytes, 0.01)
    assert resolve_n_shards(user) > 1
    user["sharding"]["auto_seconds"] = 1000.0
    assert resolve_n_shards(user) == 1


def test_the_shard_count_is_passed_on_to_job_processes(monkeypatch) -> None:
    from soundstage import ingest as ing

    monkeypatch.delenv(ing.N_SHARDS_ENV, raising=False)
    assert ing.inherited_n_shards() is None
    ing.pass_on_n_shards(16)
    assert ing.inherited_n_shards() == 16
    for bad in ("", "0", "-3", "auto", "2.5"):  # anything else is ignored: the job resolves the count itself
        monkeypatch.setenv(ing.N_SHARDS_ENV, bad)
        assert ing.inherited_n_shards() is None
