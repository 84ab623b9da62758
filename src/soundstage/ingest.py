"""Stage ``ingest``: find every labelled audio file of a dataset and write the manifest.

Three layouts (``params.yaml: data.layout``):

``folder``
    One folder per class at any depth (``genres/blues/blues.00000.au``): the label is the folder at
    ``label_level`` of the path below the root (-1: the file's parent). ``group_regex`` may pull a
    group (artist, speaker) out of the relative path; a pattern that matches no file, or only some,
    is warned about (:class:`IngestWarning`): those clips are each their own group.
``csv``
    A metadata CSV (or TSV) with configurable path, label, group and transcript columns. A relative
    path is looked up next to the CSV, then below ``root``, then by its file name below ``root``
    (when that name is unique), so CSVs kept in a ``meta/`` folder beside ``audio/`` work as they
    come.
``regex``
    A flat (or nested) folder whose file names carry the label and group, parsed by a regular
    expression with named groups ``label`` and optionally ``group``.

Metadata is kept: every other named group of the regex (``(?P<take>...)``) and every other column
of the metadata CSV (ESC-50's ``fold``) becomes a text column of the manifest after the standard
ones, under its own name, or ``meta_<name>`` where that name is a manifest column already
(:func:`metadata_names`). ``split.mode: column`` reads them. The folder layout has none.

Every file is probed (header only, plus an MP3's frame headers; decoding happens in ``process``).
Files that cannot be used are listed in the rejected table with a reason and the file in
``detail``; the rest of the dataset goes on. Ingest's own reasons are :data:`INGEST_REASONS` (the
audio ones come from :mod:`soundstage.decode`); all of them are described in
:data:`soundstage.rejections.REASONS`. The first usable file of a clip id is kept; later ones are
``duplicate_id``.

A file whose extension is not in ``extensions`` is listed too, not decoded:
``unsupported_extension`` when it is an audio or video type (:data:`AUDIO_EXTENSIONS`: a clip
lost), ``other_file`` otherwise (a README, a cover image: not counted as a clip). Hidden files and
folders (names starting with a dot: ``.DS_Store``, AppleDouble ``._x.wav``, ``.git``) are not data
and are skipped silently. The count of skipped files per extension is also in
``manifest.attrs["ignored"]``.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from soundstage.decode import AudioError, probe_audio
from soundstage.io import read_ahead
from soundstage.rejections import REJECTED_COLUMNS, rejection, shard_of

__all__ = ["AUDIO_EXTENSIONS", "INGEST_REASONS", "MANIFEST_COLUMNS", "IngestWarning", "fingerprint_tree", "ingest",
           "metadata_names"]

#: Bytes of each file the kernel is asked to read ahead while ingest probes the one before (a
#: header, a FLAC STREAMINFO, an MP3's Xing frame are at the start; the rest is read on demand).
HEADER_BYTES = 64 * 1024
MANIFEST_COLUMNS = ["id", "path", "label", "group", "duration", "sample_rate", "channels", "format", "shard"]
INGEST_REASONS = frozenset({"unsupported_extension", "other_file", "no_class_folder", "no_match", "missing_label",
                            "missing_path", "missing_file", "not_in_csv", "duplicate_id", "unreadable"})

#: Extensions of audio (and audio-bearing video) files: one of these left out of ``data.extensions``
#: is a clip the run does not read (``unsupported_extension``), anything else is ``other_file``.
AUDIO_EXTENSIONS = frozenset({
    "wav", "wave", "bwf", "rf64", "w64", "flac", "ogg", "oga", "opus", "spx", "mp3", "mp2", "mpga", "au", "snd",
    "aif", "aiff", "aifc", "caf", "m4a", "m4b", "mp4", "m4v", "aac", "adts", "alac", "wma", "wmv", "asf", "webm",
    "weba", "mka", "mkv", "mov", "avi", "ape", "wv", "tta", "mpc", "amr", "3gp", "3g2", "ac3", "eac3", "dts",
    "ra", "rm", "voc", "sd2", "ircam", "sf", "nist", "sph", "htk", "pvf", "xi", "mat", "avr", "paf", "svx", "8svx",
})


class IngestWarning(UserWarning):
    """A setting that ingest can go on with but that likely does not fit the data (a group pattern
    matching no file): the CLI prints it as ``ingest: WARNING: ...``."""


@dataclass
class _Candidate:
    path: Path
    label: str
    group: str | None
    clip_id: str
    transcript: str | None = None
    origin: str = ""  # where the candidate came from, for duplicate messages (a CSV row)
    meta: dict[str, str | None] = field(default_factory=dict)  # extra regex groups / CSV columns


def metadata_names(names: list[str], taken: list[str]) -> dict[str, str]:
    """``{source name: manifest column}`` of extra metadata: each name kept, prefixed with ``meta_``
    (again, if need be) where it would clash with a column in ``taken`` or an earlier one."""
    used = set(taken)
    out = {}
    for name in names:
        column = name
        while column in used:
            column = f"meta_{column}"
        used.add(column)
        out[name] = column
    return out


def _extension(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


def _walk_audio(root: Path, extensions: set[str], *, rejected: list[dict] | None = None,
                skipped: list[Path] | None = None) -> list[Path]:
    """Audio files below ``root`` in a stable (sorted) order; hidden files and folders are skipped.

    Folder symlinks are followed (datasets are often linked in), each real folder once. Folders that
    cannot be listed are added to ``rejected``; files with other extensions are appended to ``skipped``.
    """
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()

    def on_error(err: OSError) -> None:
        if rejected is not None:
            rejected.append(rejection(err.filename, None, "ingest", "unreadable",
                                      f"{err.filename}: cannot list folder ({err.strerror or err})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:  # a symlink loop, or a folder linked twice
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):  # .DS_Store, AppleDouble ._x.wav, editor temp files: not data
                continue
            if _extension(name) in extensions:
                found.append(Path(dirpath, name))
            elif skipped is not None:
                skipped.append(Path(dirpath, name))
    return found


def _skipped_rows(skipped: list[Path], root: Path, extensions: set[str], *, rejected: list[dict],
                  ignored: Counter) -> None:
    """One rejected row per file skipped for its extension (and its count in ``ignored``)."""
    listed = ", ".join(sorted(extensions))
    for path in skipped:
        ext = _extension(path.name)
        ignored[f".{ext}" if ext else "(none)"] += 1
        clip_id = _relative_id(path, [root])
        if ext in AUDIO_EXTENSIONS:
            rejected.append(rejection(path, clip_id, "ingest", "unsupported_extension",
                                      f"{path}: .{ext} is not in data.extensions ({listed}): not decoded"))
        else:
            what = f"extension .{ext}" if ext else "no extension"
            rejected.append(rejection(path, clip_id, "ingest", "other_file",
                                      f"{path}: not an audio file by its name ({what}): not a clip"))


#: Where the synthesized demo lives: ``data.root`` there with the folder layout means "the demo".
DEMO_ROOT = "data/demo"


def is_demo(params: dict) -> bool:
    """Whether validated ``params`` point at the synthesized demo (made by the ``demo`` stage)."""
    return os.path.normpath(params["data"]["root"]) == DEMO_ROOT and params["data"]["layout"] == "folder"


@dataclass(frozen=True)
class TreeScan:
    """What one walk of a dataset folder tells before anything is decoded."""

    fingerprint: str  #: hash of (relative path, size, mtime) of every file but hidden ones
    n_audio: int  #: files with one of the dataset's extensions
    audio_bytes: int  #: their total size in bytes


def scan_tree(root: str | Path, extensions: list[str] | tuple[str, ...]) -> TreeScan:
    """Walk ``root`` once (a single file: that file): its :attr:`TreeScan.fingerprint`, which Snakemake
    passes as a rule parameter so that adding, removing or touching files re-runs ``ingest`` (a
    folder's own mtime does not see changes in nested folders; files of other extensions count too,
    ingest lists them as rejected), and the audio files' count and bytes, which size ``n_shards: auto``.
    """
    root = Path(root)
    digest = hashlib.sha1()
    n_audio = audio_bytes = 0
    if root.is_file():
        st = root.stat()
        digest.update(f"{root.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        root = root.parent
    others: list[Path] = []
    exts = {e.lower() for e in extensions}
    audio = _walk_audio(root, exts, skipped=others) if root.is_dir() else []
    is_audio = set(audio)
    for path in sorted(audio + others):
        try:
            st = path.stat()
        except OSError:
            continue
        digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        if path in is_audio:
            n_audio += 1
            audio_bytes += st.st_size
    return TreeScan(digest.hexdigest(), n_audio, audio_bytes)


def fingerprint_tree(root: str | Path, extensions: list[str] | tuple[str, ...]) -> str:
    """:attr:`TreeScan.fingerprint` of :func:`scan_tree`."""
    return scan_tree(root, extensions).fingerprint


#: Estimated CPU seconds of process + features per audio file, and per byte of audio file (decode,
#: resample, one STFT): from the benchmark sets, which they overestimate by up to 2.2x
#: (benchmarks/README.md, "n_shards: auto"), so a shard errs towards less work, not more.
AUTO_SECONDS_PER_FILE = 0.002
AUTO_SECONDS_PER_BYTE = 15e-9


#: From this much estimated work on (or a quarter of ``auto_seconds``, if less), ``auto`` gives at
#: least two shards, so that two cores share the work rather than one doing it all.
AUTO_TWO_SHARDS_SECONDS = 1.0


def auto_shards(n_files: int, n_bytes: int, seconds: float = 8.0) -> int:
    """``sharding.n_shards: auto``: the least power of two (1..512) giving each shard at most
    ``seconds`` (``sharding.auto_seconds``) of estimated work, and at least 2 from
    :data:`AUTO_TWO_SHARDS_SECONDS` of work in all (a quarter of ``seconds`` if less). It depends on
    the data alone, not on the machine, so every clone and cluster node shards alike, and it changes
    only when the data about doubles or halves (a change re-runs every shard)."""
    work = n_files * AUTO_SECONDS_PER_FILE + n_bytes * AUTO_SECONDS_PER_BYTE
    n = 2 if work > min(AUTO_TWO_SHARDS_SECONDS, seconds / 4) else 1
    while n < 512 and work / n > seconds:
        n *= 2
    return n


#: How a Snakemake run tells the job processes it starts (a cluster's) the shard count it resolved.
N_SHARDS_ENV = "SOUNDSTAGE_N_SHARDS"


def inherited_n_shards() -> int | None:
    """The shard count a parent Snakemake process passed on (:func:`pass_on_n_shards`), if any."""
    value = os.environ.get(N_SHARDS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def pass_on_n_shards(n: int) -> None:
    """Let the processes started from here (Snakemake's jobs) inherit the shard count ``n``."""
    os.environ[N_SHARDS_ENV] = str(int(n))


def resolve_n_shards(params: dict, scan: TreeScan | None = None) -> int:
    """``sharding.n_shards`` of validated ``params`` as a number: itself, or for ``auto``
    :func:`auto_shards` of the dataset (``scan`` of ``data.root`` when given, else walked here; the
    demo, which may not exist yet, is sized from its ``demo`` params)."""
    n = params["sharding"]["n_shards"]
    if n != "auto":
        return int(n)
    if is_demo(params):
        d = params["demo"]
        clips = d["n_classes"] * d["clips_per_class"]
        return auto_shards(clips, int(clips * d["duration"] * d["sample_rate"] * 2),  # 16-bit WAVs
                           params["sharding"]["auto_seconds"])
    if scan is None:
        scan = scan_tree(params["data"]["root"], params["data"]["extensions"])
    return auto_shards(scan.n_audio, scan.audio_bytes, params["sharding"]["auto_seconds"])


def _clip_id(rel: str) -> str:
    """``blues/blues.00000.au`` -> ``blues/blues.00000`` (only the last extension goes)."""
    head, sep, name = rel.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{head}{sep}{stem}"


def _folder_candidates(root: Path, extensions: set[str], *, label_level: int, group_regex: str | None,
                       rejected: list[dict], ignored: Counter) -> list[_Candidate]:
    group_re = re.compile(group_regex) if group_regex else None
    out = []
    skipped: list[Path] = []
    found = _walk_audio(root, extensions, rejected=rejected, skipped=skipped)
    _skipped_rows(skipped, root, extensions, rejected=rejected, ignored=ignored)
    for path in found:
        rel = path.relative_to(root).as_posix()
        clip_id = _clip_id(rel)
        folders = rel.split("/")[:-1]
        try:
            label = folders[label_level]
        except IndexError:
            where = "directly under data.root" if not folders else f"{len(folders)} folder(s) deep"
            rejected.append(rejection(path, clip_id, "ingest", "no_class_folder",
                                      f"{path}: {where}, no class folder at data.folder.label_level={label_level}"))
            continue
        group = None
        if group_re is not None:
            m = group_re.search(clip_id)
            group = (m.group("group") or None) if m else None
        out.append(_Candidate(path, label, group, clip_id))
    if group_regex and out:
        _warn_groupless(group_regex, [c.clip_id for c in out if c.group is None], searched=len(out))
    return out


def _warn_groupless(group_regex: str, groupless: list[str], *, searched: int) -> None:
    """Warn when ``data.folder.group_regex`` found no group in some (or all) of the ``searched`` paths.

    params.yaml ships the demo's pattern: on a user's folders it matches nothing, and without this
    every clip would silently be its own group (a split that may leak artists or speakers).
    """
    if not groupless:
        return
    key = f"data.folder.group_regex '{group_regex}'"  # as written in params.yaml (repr would double backslashes)
    files = f"{searched} file{'s' if searched != 1 else ''}"
    example = f"{groupless[0]!r} (the path below data.root without its extension, which the pattern is searched in)"
    if len(groupless) == searched:
        msg = (f"{key} matches no file: none of the {files} it was searched in, e.g. {example}; no clip has a "
               "group, each is its own group. params.yaml ships the demo's pattern: set data.folder.group_regex "
               "to null, or to a pattern with (?P<group>...) that fits your paths")
    else:
        msg = (f"{key} does not match {len(groupless)} of the {files} it was searched in, e.g. {example}: "
               "those clips have no group, each is its own group")
    warnings.warn(msg, IngestWarning, stacklevel=4)  # the line calling ingest()


def _regex_candidates(root: Path, extensions: set[str], *, pattern: str, rejected: list[dict],
                      ignored: Counter) -> list[_Candidate]:
    rx = re.compile(pattern)
    out = []
    skipped: list[Path] = []
    found = _walk_audio(root, extensions, rejected=rejected, skipped=skipped)
    _skipped_rows(skipped, root, extensions, rejected=rejected, ignored=ignored)
    for path in found:
        rel = path.relative_to(root).as_posix()
        clip_id = _clip_id(rel)
        # The file name as documented; also its stem and the relative path, so that a pattern
        # written without the extension, or one naming a folder, matches as its author meant.
        m = next((m for text in dict.fromkeys((path.name, _clip_id(path.name), rel, clip_id))
                  if (m := rx.fullmatch(text))), None)
        if m is None:
            rejected.append(rejection(path, clip_id, "ingest", "no_match",
                                      f"{path}: file name {path.name!r} does not match data.regex.pattern {pattern!r}"))
            continue
        label = (m.group("label") or "").strip()
        if not label:
            rejected.append(rejection(path, clip_id, "ingest", "missing_label",
                                      f"{path}: data.regex.pattern matched but its 'label' group is empty"))
            continue
        found = m.groupdict()
        group = found.get("group") or None
        meta = {k: v for k, v in found.items() if k not in ("label", "group")}
        out.append(_Candidate(path, label, group, clip_id, meta=meta))
    return out


def _relative_id(path: Path, bases: list[Path]) -> str:
    """Clip id of a CSV path: below the first base that holds it, else the absolute path."""
    candidates = [path, path.resolve()]
    for base in bases:
        for p in candidates:
            try:
                return _clip_id(p.relative_to(base).as_posix())
            except ValueError:
                continue
    return _clip_id(path.as_posix().lstrip("/"))


def _read_table(csv_path: Path) -> pd.DataFrame:
    sep = "\t" if csv_path.suffix.lower() in (".tsv", ".tab") else ","
    # utf-8-sig: spreadsheet exports often start with a byte-order mark, which would glue itself
    # to the first column's name.
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, sep=sep, encoding="utf-8-sig")
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _csv_candidates(csv_path: Path, root: Path, extensions: set[str], *, path_column: str, label_column: str,
                    group_column: str | None, transcript_column: str | None, rejected: list[dict],
                    ignored: Counter) -> tuple[list[_Candidate], list[str]]:
    """The CSV's candidates and its metadata column names (those no ``*_column`` names)."""
    table = _read_table(csv_path)
    for key, column in (("path_column", path_column), ("label_column", label_column),
                        ("group_column", group_column), ("transcript_column", transcript_column)):
        if column is not None and column not in table.columns:
            raise ValueError(f"data.csv.{key}: column {column!r} not in {csv_path} "
                             f"(columns: {', '.join(table.columns)})")
    used_columns = {path_column, label_column, group_column, transcript_column}
    extra = [c for c in table.columns if c not in used_columns]
    base = csv_path.parent
    skipped: list[Path] = []
    on_disk = _walk_audio(root, extensions, rejected=rejected, skipped=skipped) if root.is_dir() else []
    by_name: dict[str, list[Path]] = {}
    for p in on_disk:
        by_name.setdefault(p.name, []).append(p)

    def locate(raw: str) -> tuple[Path | None, str]:
        """The file a CSV path names, or ``(None, why not)``."""
        tries: list[Path] = []
        for text in dict.fromkeys((raw, raw.replace("\\", "/"))):  # CSVs written on Windows
            given = Path(text).expanduser()
            tries += [given] if given.is_absolute() else [base / given, root / given]
        for p in tries:
            if p.is_file():
                return Path(os.path.normpath(p)), ""
        name = tries[-1].name
        same_name = by_name.get(name, [])
        if len(same_name) == 1:
            return same_name[0], ""
        looked = " or ".join(dict.fromkeys(os.path.normpath(p) for p in tries))
        return None, (f"{len(same_name)} files named {name!r} below {root}: ambiguous" if same_name
                      else f"no such file ({looked})")

    out = []
    used: set[Path] = set()
    for row_no, row in enumerate(table.to_dict("records"), start=2):
        raw = row[path_column].strip()
        where = f"{csv_path.name} row {row_no}"
        if not raw:
            rejected.append(rejection(f"{csv_path}:{row_no}", None, "ingest", "missing_path",
                                      f"{csv_path}:{row_no}: {where}: empty {path_column!r}"))
            continue
        path, why = locate(raw)
        shown = path if path is not None else Path(os.path.normpath(base / raw))
        clip_id = _relative_id(shown, [root, base])
        if path is None:
            rejected.append(rejection(shown, clip_id, "ingest", "missing_file", f"{shown}: {where}: {why}"))
            continue
        used.add(path.resolve())
        label = row[label_column].strip()
        if not label:
            rejected.append(rejection(path, clip_id, "ingest", "missing_label",
                                      f"{path}: {where}: no {label_column!r}"))
            continue
        group = (row[group_column].strip() or None) if group_column else None
        transcript = row[transcript_column] if transcript_column else None
        meta = {k: row[k] for k in extra}
        out.append(_Candidate(path, label, group, clip_id, transcript, origin=where, meta=meta))
    # Unlisted files are only news when the CSV describes this folder at all (a root unrelated to
    # the CSV, e.g. the default, must not flood the rejected table).
    real_root = root.resolve()
    describes_root = any(p.is_relative_to(real_root) for p in used)
    for p in on_disk if describes_root else []:
        if p.resolve() not in used:
            rejected.append(rejection(p, _relative_id(p, [root]), "ingest", "not_in_csv",
                                      f"{p}: audio file below data.root that no row of {csv_path.name} names"))
    if describes_root:  # the metadata CSV itself is no stray file
        _skipped_rows([p for p in skipped if p.resolve() != csv_path.resolve()], root, extensions,
                      rejected=rejected, ignored=ignored)
    return out, extra


def _duplicate_detail(cand: _Candidate, first: _Candidate, *, first_failed: bool) -> str:
    where = f"{cand.origin}: " if cand.origin else ""
    if first.path == cand.path:
        what = f"file already listed ({first.origin or 'above'}{', and rejected' if first_failed else ''})"
    else:
        what = f"clip id {cand.clip_id!r} already used by {first.path}"
    conflict = f"; labels differ ({first.label!r} kept, {cand.label!r} here)" if first.label != cand.label else ""
    return f"{cand.path}: {where}{what}{conflict}"


def ingest(*, root: str | Path, layout: str = "folder", extensions: list[str] | tuple[str, ...] = ("wav",),
           label_level: int = -1, group_regex: str | None = None, csv_path: str | Path | None = None,
           path_column: str = "path", label_column: str = "label", group_column: str | None = None,
           transcript_column: str | None = None, pattern: str | None = None, n_shards: int = 8,
           progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan a dataset and return ``(manifest, rejected)``.

    Parameters
    ----------
    root : path
        The dataset folder (csv layout: where relative paths are also looked up, and whose audio
        files the CSV must name; it may be absent).
    layout : {'folder', 'csv', 'regex'}
    extensions : sequence of str
        Audio extensions (case-insensitive, no dot) considered by the folder walk.
    n_shards : int
        ``shard = crc32(id) % n_shards``.

    Returns
    -------
    manifest : pandas.DataFrame
        One row per usable clip with columns ``MANIFEST_COLUMNS`` (+ ``transcript`` when
        ``transcript_column`` is given, + the metadata columns: the pattern's other named groups
        or the CSV's other columns, as text, named by :func:`metadata_names`), sorted by ``id``;
        ``path`` is absolute, ``duration`` in seconds (the length that decodes: see
        :func:`soundstage.decode.probe_audio`).
        ``manifest.attrs["ignored"]``: ``{".ext": count}`` of files skipped for their extension
        (each is also a ``rejected`` row).
    rejected : pandas.DataFrame
        One row per unusable or skipped file: ``path, id, stage, reason, detail`` (reasons of
        :data:`soundstage.rejections.REASONS`).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing root or CSV, a CSV without the configured columns, an unknown layout.
    """
    from tqdm.auto import tqdm

    root = Path(root).expanduser().resolve()
    exts = {e.lower().lstrip(".") for e in extensions}
    rejected: list[dict] = []
    ignored: Counter = Counter()
    if layout == "csv":
        if csv_path is None:
            raise ValueError("data.csv.path: required when data.layout is csv")
        csv_file = Path(csv_path).expanduser().resolve()
        if not csv_file.is_file():
            raise FileNotFoundError(f"data.csv.path: metadata CSV not found: {csv_file}")
        candidates, meta_names = _csv_candidates(
            csv_file, root, exts, path_column=path_column, label_column=label_column, group_column=group_column,
            transcript_column=transcript_column, rejected=rejected, ignored=ignored)
    else:
        if not root.is_dir():
            raise FileNotFoundError(f"data.root: dataset folder not found: {root}")
        if layout == "folder":
            candidates = _folder_candidates(root, exts, label_level=label_level, group_regex=group_regex,
                                            rejected=rejected, ignored=ignored)
            meta_names = []
        elif layout == "regex":
            if not pattern:
                raise ValueError("data.regex.pattern: required when data.layout is regex")
            candidates = _regex_candidates(root, exts, pattern=pattern, rejected=rejected, ignored=ignored)
            meta_names = [g for g in re.compile(pattern).groupindex if g not in ("label", "group")]
        else:
            raise ValueError(f"data.layout: unknown layout {layout!r} (folder, csv or regex)")

    # From the layout, not the rows: the columns are there (maybe empty) even when no clip is.
    meta_columns = metadata_names(meta_names, MANIFEST_COLUMNS + (["transcript"] if transcript_column else []))
    rows = []
    seen: dict[str, _Candidate] = {}
    failed: dict[Path, _Candidate] = {}
    # Headers of the next files read ahead by the kernel while this one is probed (a cold dataset).
    ahead = read_ahead(candidates, lambda cand: cand.path, ahead=16, length=HEADER_BYTES)
    for cand in tqdm(ahead, total=len(candidates), desc="ingest", unit="file", disable=not progress):
        first = seen.get(cand.clip_id) or failed.get(cand.path)
        if first is not None:
            rejected.append(rejection(cand.path, cand.clip_id, "ingest", "duplicate_id",
                                      _duplicate_detail(cand, first, first_failed=first.path in failed)))
            continue
        try:
            info = probe_audio(cand.path)
        except AudioError as exc:
            rejected.append(rejection(cand.path, cand.clip_id, "ingest", exc.reason, str(exc)))
            failed[cand.path] = cand
            continue
        seen[cand.clip_id] = cand
        row = {"id": cand.clip_id, "path": str(cand.path), "label": cand.label, "group": cand.group,
               "duration": info.duration, "sample_rate": info.sample_rate, "channels": info.channels,
               "format": info.format, "shard": shard_of(cand.clip_id, n_shards)}
        if transcript_column:
            row["transcript"] = cand.transcript
        row.update({meta_columns[k]: v for k, v in cand.meta.items()})
        rows.append(row)

    columns = MANIFEST_COLUMNS + (["transcript"] if transcript_column else [])
    columns += list(meta_columns.values())
    manifest = pd.DataFrame(rows, columns=columns).sort_values("id", kind="stable").reset_index(drop=True)
    manifest.attrs["ignored"] = dict(sorted(ignored.items()))
    return manifest, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)
