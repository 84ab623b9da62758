"""Stage ``ingest``: find every labelled audio file of a dataset and write the manifest.

Three layouts (``params.yaml: data.layout``):

``folder``
    One folder per class at any depth (``genres/blues/blues.00000.au``): the label is the folder at
    ``label_level`` of the path below the root (-1: the file's parent). ``group_regex`` may pull a
    group (artist, speaker) out of the relative path.
``csv``
    A metadata CSV with configurable path, label, group and transcript columns; paths are absolute
    or relative to the CSV.
``regex``
    A flat (or nested) folder whose file names carry the label and group, parsed by a regular
    expression with named groups ``label`` and optionally ``group``.

Every file is probed (header only; decoding happens in ``process``). Files that cannot be used are
listed in the rejected table with a reason; the rest of the dataset goes on.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from soundstage.audio import AudioError, probe_audio

MANIFEST_COLUMNS = ["id", "path", "label", "group", "duration", "sample_rate", "channels", "format", "shard"]
REJECTED_COLUMNS = ["path", "id", "stage", "reason", "detail"]


def shard_of(clip_id: str, n_shards: int) -> int:
    """Stable shard of a clip: adding clips never moves existing ones to another shard."""
    return zlib.crc32(clip_id.encode("utf-8")) % n_shards


def rejection(path: str | Path, clip_id: str | None, stage: str, reason: str, detail: str) -> dict[str, str]:
    return {"path": str(path), "id": clip_id or "", "stage": stage, "reason": reason, "detail": detail}


@dataclass
class _Candidate:
    path: Path
    label: str | None
    group: str | None
    clip_id: str
    transcript: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _walk_audio(root: Path, extensions: set[str]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower().lstrip(".") in extensions:
                found.append(Path(dirpath) / name)
    return found


def fingerprint_tree(root: str | Path, extensions: list[str] | tuple[str, ...]) -> str:
    """Hash of (relative path, size, mtime) of every audio file below ``root``.

    Snakemake passes this as a rule parameter so that adding, removing or touching files re-runs
    ``ingest`` (a folder's own mtime does not see changes in nested folders).
    """
    root = Path(root)
    digest = hashlib.sha1()
    if root.is_file():
        st = root.stat()
        digest.update(f"{root.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        root = root.parent
    for path in _walk_audio(root, {e.lower() for e in extensions}) if root.is_dir() else []:
        try:
            st = path.stat()
        except OSError:
            continue
        digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _folder_candidates(root: Path, extensions: set[str], *, label_level: int,
                       group_regex: str | None, rejected: list[dict]) -> list[_Candidate]:
    group_re = re.compile(group_regex) if group_regex else None
    out = []
    for path in _walk_audio(root, extensions):
        rel = path.relative_to(root)
        clip_id = rel.with_suffix("").as_posix()
        folders = rel.parts[:-1]
        try:
            label = folders[label_level]
        except IndexError:
            rejected.append(rejection(path, clip_id, "ingest", "no_label",
                                      f"{rel.as_posix()}: no class folder at data.folder.label_level={label_level}"))
            continue
        group = None
        if group_re is not None:
            m = group_re.search(clip_id)
            if m and m.group("group"):
                group = m.group("group")
        out.append(_Candidate(path, label, group, clip_id))
    return out


def _regex_candidates(root: Path, extensions: set[str], *, pattern: str, rejected: list[dict]) -> list[_Candidate]:
    rx = re.compile(pattern)
    out = []
    for path in _walk_audio(root, extensions):
        rel = path.relative_to(root)
        clip_id = rel.with_suffix("").as_posix()
        m = rx.fullmatch(path.name)
        if not m or not m.group("label"):
            rejected.append(rejection(path, clip_id, "ingest", "no_label",
                                      f"{path.name}: file name does not match data.regex.pattern"))
            continue
        group = m.groupdict().get("group") or None
        out.append(_Candidate(path, m.group("label"), group, clip_id))
    return out


def _csv_candidates(csv_path: Path, *, path_column: str, label_column: str, group_column: str | None,
                    transcript_column: str | None, rejected: list[dict]) -> list[_Candidate]:
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    for key, column in (("path_column", path_column), ("label_column", label_column),
                        ("group_column", group_column), ("transcript_column", transcript_column)):
        if column is not None and column not in table.columns:
            raise ValueError(f"data.csv.{key}: column {column!r} not in {csv_path} "
                             f"(columns: {', '.join(table.columns)})")
    base = csv_path.parent
    out = []
    for row_no, row in enumerate(table.to_dict("records"), start=2):
        raw = row[path_column].strip()
        if not raw:
            rejected.append(rejection(f"{csv_path}:{row_no}", None, "ingest", "missing_path",
                                      f"{csv_path.name} row {row_no}: empty {path_column!r}"))
            continue
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        try:
            clip_id = path.resolve().relative_to(base.resolve()).with_suffix("").as_posix()
        except ValueError:
            clip_id = path.with_suffix("").as_posix().lstrip("/")
        label = row[label_column].strip()
        if not label:
            rejected.append(rejection(path, clip_id, "ingest", "missing_label",
                                      f"{csv_path.name} row {row_no}: no {label_column!r} for {raw}"))
            continue
        if not path.is_file():
            rejected.append(rejection(path, clip_id, "ingest", "missing_file",
                                      f"{csv_path.name} row {row_no}: file not found: {raw}"))
            continue
        group = row[group_column].strip() or None if group_column else None
        transcript = row[transcript_column] if transcript_column else None
        out.append(_Candidate(path, label, group, clip_id, transcript))
    return out


def ingest(*, root: str | Path, layout: str = "folder", extensions: list[str] | tuple[str, ...] = ("wav",),
           label_level: int = -1, group_regex: str | None = None, csv_path: str | Path | None = None,
           path_column: str = "path", label_column: str = "label", group_column: str | None = None,
           transcript_column: str | None = None, pattern: str | None = None, n_shards: int = 8,
           progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan a dataset and return ``(manifest, rejected)``.

    Returns
    -------
    manifest : pandas.DataFrame
        One row per usable clip with columns ``MANIFEST_COLUMNS`` (+ ``transcript`` when
        ``transcript_column`` is given); ``path`` is absolute, ``duration`` in seconds.
    rejected : pandas.DataFrame
        One row per unusable file: ``path, id, stage, reason, detail``.
    """
    from tqdm.auto import tqdm

    root = Path(root).expanduser().resolve()
    exts = {e.lower().lstrip(".") for e in extensions}
    rejected: list[dict] = []
    if layout == "csv":
        if csv_path is None:
            raise ValueError("data.csv.path: required when data.layout is csv")
        csv_file = Path(csv_path).expanduser().resolve()
        if not csv_file.is_file():
            raise FileNotFoundError(f"data.csv.path: metadata CSV not found: {csv_file}")
        candidates = _csv_candidates(csv_file, path_column=path_column, label_column=label_column,
                                     group_column=group_column, transcript_column=transcript_column,
                                     rejected=rejected)
    else:
        if not root.is_dir():
            raise FileNotFoundError(f"data.root: dataset folder not found: {root}")
        if layout == "folder":
            candidates = _folder_candidates(root, exts, label_level=label_level, group_regex=group_regex,
                                            rejected=rejected)
        elif layout == "regex":
            if not pattern:
                raise ValueError("data.regex.pattern: required when data.layout is regex")
            candidates = _regex_candidates(root, exts, pattern=pattern, rejected=rejected)
        else:
            raise ValueError(f"data.layout: unknown layout {layout!r} (folder, csv or regex)")

    rows = []
    seen: dict[str, Path] = {}
    for cand in tqdm(candidates, desc="ingest", unit="file", disable=not progress):
        if cand.clip_id in seen:
            rejected.append(rejection(cand.path, cand.clip_id, "ingest", "duplicate_id",
                                      f"{cand.path.name}: clip id {cand.clip_id!r} already used by {seen[cand.clip_id]}"))
            continue
        try:
            info = probe_audio(cand.path)
        except AudioError as exc:
            rejected.append(rejection(cand.path, cand.clip_id, "ingest", exc.reason, str(exc)))
            continue
        seen[cand.clip_id] = cand.path
        row = {"id": cand.clip_id, "path": str(cand.path), "label": cand.label, "group": cand.group,
               "duration": info.duration, "sample_rate": info.sample_rate, "channels": info.channels,
               "format": info.format, "shard": shard_of(cand.clip_id, n_shards)}
        if transcript_column:
            row["transcript"] = cand.transcript
        rows.append(row)

    columns = MANIFEST_COLUMNS + (["transcript"] if transcript_column else [])
    manifest = pd.DataFrame(rows, columns=columns).sort_values("id", kind="stable").reset_index(drop=True)
    return manifest, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)
