"""Rejected files: the one list of reasons, the shared table helpers, and the run's verdict.

Every stage that cannot use a file writes one row per file to its rejected table (ingest's
``rejected.csv``, each process and features shard's ``NNN.rejected.csv``) with the columns
:data:`REJECTED_COLUMNS`: ``path, id, stage, reason, detail``. ``reason`` is one of
:data:`REASONS`, the single list that the code, the report and the README share.

At the end of a run (and before training) the tables are summarized
(:func:`summarize_rejections`): when more than ``data.max_rejected_share`` of the files were
rejected the run stops (:func:`check_rejected_share` raises :class:`TooManyRejectedError`, naming
the counts by reason and a few files of each); below it, :func:`format_summary` gives the
paragraph the console prints.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = [
    "NOT_COUNTED",
    "REASONS",
    "REJECTED_COLUMNS",
    "RejectionSummary",
    "TooManyRejectedError",
    "check_rejected_share",
    "describe",
    "files_considered",
    "format_summary",
    "read_rejected",
    "rejection",
    "shard_of",
    "summarize_rejections",
    "summarize_run",
]

REJECTED_COLUMNS = ["path", "id", "stage", "reason", "detail"]

#: Every reason a stage can give for not using a file, in pipeline order, with what it means. The
#: README's list of reasons is this one (a test compares them).
REASONS: dict[str, str] = {
    "unsupported_extension": "an audio or video file type that data.extensions leaves out (m4a, aac, wma, ...)",
    "other_file": "a file that is not audio by its extension (txt, csv, jpg, ...); listed, not counted",
    "unreadable": "cannot be read: permissions, not a regular file (a FIFO), an I/O error, a folder that cannot "
                  "be listed",
    "not_found": "the path does not exist: a broken symbolic link, or a file removed during the run",
    "no_class_folder": "folder layout: no folder at data.folder.label_level above the file",
    "no_match": "regex layout: the file name does not match data.regex.pattern",
    "missing_label": "a CSV row with an empty label, or a regex whose label group matched nothing",
    "missing_path": "a CSV row with an empty path",
    "missing_file": "a CSV row whose file does not exist",
    "not_in_csv": "csv layout: an audio file below data.root that no CSV row names; listed, not counted",
    "duplicate_id": "a second file with the same clip id (a.wav and a.flac, or a CSV row repeating a file)",
    "empty_file": "zero bytes, or a valid header with no audio frames",
    "not_audio": "the content is not a recognised audio format (text, random bytes, ...)",
    "undecodable": "looks like audio, but no decoder here reads it (m4a/aac/wma content, an unknown codec)",
    "truncated": "cut short: less data than the header states, a stream that ends inside a frame, or a "
                 "decode error",
    "nonfinite": "NaN or infinite samples in a float file",
    "silent": "nothing above -120 dBFS: no audio to keep",
    "too_short": "shorter than process.duration.min_seconds, or than process.duration.seconds with "
                 "process.duration.short: reject",
    "cannot_process": "the params cannot apply to this clip (e.g. a filter cutoff above its Nyquist rate with "
                      "process.sample_rate: null), or an unexpected error while processing it",
}

#: Reasons listed in the rejected tables but not counted as lost clips in the rejected share: the
#: file was never meant to be a clip (a README below the dataset, audio a CSV does not name).
NOT_COUNTED = frozenset({"other_file", "not_in_csv"})

_STAGES = ("ingest", "process", "features")  # pipeline order, for counts per stage

#: A segment's id is its clip id plus ``__s<k>`` (process's segment mode): a clip counts once.
_SEGMENT_SUFFIX = re.compile(r"__s\d+$")


def shard_of(clip_id: str, n_shards: int) -> int:
    """Stable shard of a clip: adding clips never moves existing ones to another shard."""
    return zlib.crc32(clip_id.encode("utf-8")) % n_shards


def rejection(path: str | Path, clip_id: str | None, stage: str, reason: str, detail: str) -> dict[str, str]:
    """One row of a rejected table (:data:`REJECTED_COLUMNS`); ``reason`` must be one of :data:`REASONS`."""
    if reason not in REASONS:
        raise ValueError(f"unknown rejection reason {reason!r} (add it to soundstage.rejections.REASONS)")
    return {"path": str(path), "id": clip_id or "", "stage": stage, "reason": reason, "detail": detail}


@dataclass(frozen=True)
class RejectionSummary:
    """What the rejected tables of a run add up to.

    Attributes
    ----------
    considered : int
        Files the run considered as clips (:func:`files_considered`).
    rejected : int
        Distinct clips rejected for a counted reason (not in :data:`NOT_COUNTED`), at any stage.
    by_reason : dict of str to int
        Rejected rows per reason (counted reasons first, most frequent first).
    by_stage : dict of str to dict of str to int
        ``{reason: {stage: rows}}``.
    examples : dict of str to list of str
        Up to ``max_examples`` paths per reason, in table order.
    """

    considered: int
    rejected: int
    by_reason: dict[str, int] = field(default_factory=dict)
    by_stage: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """``rejected / considered`` (0 when nothing was considered)."""
        return self.rejected / self.considered if self.considered else 0.0

    @property
    def not_counted(self) -> dict[str, int]:
        """Rows per reason of :data:`NOT_COUNTED` (listed, not part of :attr:`share`)."""
        return {r: n for r, n in self.by_reason.items() if r in NOT_COUNTED}


def files_considered(*, manifest: pd.DataFrame, ingest_rejected: pd.DataFrame) -> int:
    """Files ingest considered as clips: the manifest's clips plus ingest's counted rejections."""
    counted = ~ingest_rejected["reason"].isin(NOT_COUNTED) if len(ingest_rejected) else []
    return len(manifest) + int(sum(counted))


def summarize_rejections(*, considered: int, tables: Iterable[pd.DataFrame], max_examples: int = 3) -> RejectionSummary:
    """Add up the rejected tables of a run.

    Parameters
    ----------
    considered : int
        Files considered as clips (:func:`files_considered` of ingest's tables).
    tables : iterable of DataFrame
        Rejected tables (:data:`REJECTED_COLUMNS`) of every stage so far, in pipeline order: ingest's
        ``rejected.csv``, then the process and features shard ``*.rejected.csv``. A row repeated
        (the same table read twice) counts once.
    max_examples : int
        Paths kept per reason.

    Returns
    -------
    RejectionSummary
        A clip rejected at several stages, or as several segments, counts once in ``rejected``.
    """
    frames = [t.reindex(columns=REJECTED_COLUMNS) for t in tables if len(t)]
    table = (pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True) if frames
             else pd.DataFrame(columns=REJECTED_COLUMNS)).fillna("")
    if not len(table):
        return RejectionSummary(considered=int(considered), rejected=0)
    counted = table[~table["reason"].isin(NOT_COUNTED)]
    # Ingest rejects files (a duplicate shares its twin's id); later stages reject clips, or their
    # segments, whose id names the clip.
    clip = "clip:" + counted["id"].astype(str).str.replace(_SEGMENT_SUFFIX, "", regex=True)
    by_file = (counted["stage"] == "ingest") | (counted["id"].astype(str) == "")
    clip = clip.where(~by_file, "file:" + counted["path"].astype(str))
    totals = table["reason"].value_counts(sort=True)
    ranked = sorted(totals.index, key=lambda r: (r in NOT_COUNTED, -int(totals[r]), str(r)))
    by_stage = {}
    for r in ranked:
        stages = table.loc[table["reason"] == r, "stage"].astype(str).value_counts()
        order = sorted(stages.index, key=lambda st: (_STAGES.index(st) if st in _STAGES else len(_STAGES), st))
        by_stage[r] = {st: int(stages[st]) for st in order}
    examples = {r: [str(p) for p in table.loc[table["reason"] == r, "path"].head(max_examples)] for r in ranked}
    return RejectionSummary(considered=int(considered), rejected=int(clip.nunique()),
                            by_reason={str(r): int(totals[r]) for r in ranked}, by_stage=by_stage,
                            examples=examples)


class TooManyRejectedError(ValueError):
    """More than ``data.max_rejected_share`` of the files were rejected: the run stops."""

    def __init__(self, summary: RejectionSummary, max_share: float, key: str = "data.max_rejected_share") -> None:
        self.summary = summary
        self.max_share = max_share
        self.key = key
        lines = [f"rejected {summary.rejected} of {summary.considered} files ({summary.share:.1%}), more than "
                 f"{key} = {max_share:g} ({max_share:.1%}) allows; the run stops instead of training on the rest."]
        for reason in summary.by_reason:
            if reason in NOT_COUNTED:
                continue
            stages = ", ".join(f"{s} {k}" for s, k in summary.by_stage[reason].items())
            lines.append(f"  {reason} ({stages}): {REASONS.get(reason, '?')}")
            lines += [f"      e.g. {path}" for path in summary.examples[reason]]
        lines.append(f"Each file and its detail are in the rejected tables (and reports/dataset/rejected.csv once "
                     f"the report is built). Fix or remove these files, or raise {key} in params.yaml.")
        super().__init__("\n".join(lines))

    def __reduce__(self):  # noqa: ANN204 - pickled with its own arguments (worker processes)
        return type(self), (self.summary, self.max_share, self.key)


def check_rejected_share(summary: RejectionSummary, *, max_share: float,
                         key: str = "data.max_rejected_share") -> None:
    """Raise :class:`TooManyRejectedError` when ``summary.share > max_share``.

    Parameters
    ----------
    summary : RejectionSummary
    max_share : float
        In [0, 1]: ``params.yaml: data.max_rejected_share`` (1 never stops).
    key : str
        The params key named in the message.
    """
    if not 0 <= max_share <= 1:
        raise ValueError(f"{key}: must lie in [0, 1], got {max_share!r}")
    if summary.share > max_share:
        raise TooManyRejectedError(summary, max_share, key)


def format_summary(summary: RejectionSummary) -> str:
    """One paragraph for the console: rejected of considered, then the count per reason and stage.

    ``"rejected 7 of 120 files (5.8%): truncated 4 (ingest 1, process 3), silent 3 (process); also
    listed, not counted: other_file 2."``
    """
    head = f"rejected {summary.rejected} of {summary.considered} files ({summary.share:.1%})"
    counted = [f"{r} {n} ({', '.join(f'{s} {k}' for s, k in summary.by_stage[r].items())})"
               for r, n in summary.by_reason.items() if r not in NOT_COUNTED]
    text = head + (": " + ", ".join(counted) if counted else "")
    if summary.not_counted:
        text += "; also listed, not counted: " + ", ".join(f"{r} {n}" for r, n in summary.not_counted.items())
    return text + "."


def read_rejected(*, ingest_dir: str | Path, process_dir: str | Path, features_dir: str | Path,
                  n_shards: int | None = None) -> pd.DataFrame:
    """All rejected tables of a run, in pipeline order, each row once (:data:`REJECTED_COLUMNS`).

    Missing tables (a stage not run yet) are skipped.
    """
    from soundstage.io import read_csv, shard_files

    files = [Path(ingest_dir) / "rejected.csv", *shard_files(Path(process_dir) / "shards", ".rejected.csv", n_shards),
             *shard_files(Path(features_dir) / "shards", ".rejected.csv", n_shards)]
    frames = [t for t in (read_csv(f) for f in files if f.is_file()) if len(t)]
    if not frames:
        return pd.DataFrame(columns=REJECTED_COLUMNS)
    return pd.concat(frames, ignore_index=True).reindex(columns=REJECTED_COLUMNS).drop_duplicates(ignore_index=True)


def summarize_run(*, ingest_dir: str | Path, process_dir: str | Path, features_dir: str | Path,
                  n_shards: int | None = None, max_examples: int = 3) -> RejectionSummary:
    """:func:`summarize_rejections` of the tables a run left on disk so far.

    ``considered`` is :func:`files_considered` of ``ingest_dir/manifest.csv`` and ``rejected.csv``.
    """
    from soundstage.io import read_csv

    ingest_dir = Path(ingest_dir)
    manifest = read_csv(ingest_dir / "manifest.csv")
    ingest_rejected = (read_csv(ingest_dir / "rejected.csv") if (ingest_dir / "rejected.csv").is_file()
                       else pd.DataFrame(columns=REJECTED_COLUMNS))
    table = read_rejected(ingest_dir=ingest_dir, process_dir=process_dir, features_dir=features_dir,
                          n_shards=n_shards)
    return summarize_rejections(considered=files_considered(manifest=manifest, ingest_rejected=ingest_rejected),
                                tables=[table], max_examples=max_examples)


def describe(reasons: Mapping[str, str] = REASONS) -> str:
    """The README's list: one ``- `reason`: description`` line per reason."""
    return "\n".join(f"- `{r}`: {d}" for r, d in reasons.items())
