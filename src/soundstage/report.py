"""Stage ``report``: a Markdown dataset report with matplotlib figures.

``reports/dataset/report.md`` holds: a summary (files found, usable, processed, rejected per stage,
classes, groups, hours), the class balance (ingested and processed clips, segments, hours and
groups per class; bar chart), the clip durations (histogram as a figure and as a table), the sample
rates, channel counts and formats seen, every rejected file with its stage and reason (ingest,
process and features together; also written to ``rejected.csv``), and the split counts per label
with a check that no group straddles two splits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from soundstage.ingest import REJECTED_COLUMNS
from soundstage.io import atomic_path, read_csv, write_csv, write_text

SPLITS = ("train", "val", "test")
#: Rejected files listed one by one in report.md; the rest are in rejected.csv.
MAX_LISTED = 500


def _shard_files(folder: Path, pattern: str, n_shards: int | None) -> list[Path]:
    """``folder/NNN<suffix>`` files: the current shards only when ``n_shards`` is known (files of an
    earlier run with more shards are stale)."""
    files = sorted(folder.glob(pattern))
    if n_shards is None:
        return files
    return [f for f in files if (m := re.match(r"(\d+)\.", f.name)) and int(m.group(1)) < n_shards]


def collect_rejected(*, ingest_dir: Path, process_dir: Path, features_dir: Path,
                     n_shards: int | None = None) -> pd.DataFrame:
    """All rejected-file tables of the run, in pipeline order (``path, id, stage, reason, detail``)."""
    files = [ingest_dir / "rejected.csv",
             *_shard_files(process_dir / "shards", "*.rejected.csv", n_shards),
             *_shard_files(features_dir / "shards", "*.rejected.csv", n_shards)]
    frames = [read_csv(f) for f in files if f.is_file()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=REJECTED_COLUMNS)
    table = pd.concat(frames, ignore_index=True).reindex(columns=REJECTED_COLUMNS)
    return table.drop_duplicates(ignore_index=True)


def _processed(process_dir: Path, n_shards: int | None) -> pd.DataFrame | None:
    files = _shard_files(process_dir / "shards", "[0-9]*.csv", n_shards)
    files = [f for f in files if not f.name.endswith(".rejected.csv")]
    frames = [read_csv(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else None


def _splits(split_dir: Path) -> pd.DataFrame | None:
    frames = [read_csv(split_dir / f"{s}.csv") for s in SPLITS if (split_dir / f"{s}.csv").is_file()]
    return pd.concat(frames, ignore_index=True) if frames else None


def _figure(path: Path, draw: Callable) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    draw(ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _cell(value: object) -> str:
    if isinstance(value, float):
        value = f"{value:.3g}" if not value.is_integer() else f"{value:.0f}"
    return " ".join(str(value).split()).replace("|", "\\|")


def _md_table(frame: pd.DataFrame) -> str:
    cols = [_cell(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _fmt_seconds(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def duration_histogram(durations: pd.Series, *, bins: int = 12) -> pd.DataFrame:
    """Clip counts per duration bin (seconds): columns ``from_s, to_s, clips``."""
    d = pd.to_numeric(durations, errors="coerce").dropna().to_numpy(dtype=float)
    if d.size == 0:
        return pd.DataFrame(columns=["from_s", "to_s", "clips"])
    lo, hi = float(d.min()), float(d.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(d, bins=bins, range=(lo, hi))
    return pd.DataFrame({"from_s": np.round(edges[:-1], 3), "to_s": np.round(edges[1:], 3), "clips": counts})


def _class_table(manifest: pd.DataFrame, processed: pd.DataFrame | None, rejected: pd.DataFrame) -> pd.DataFrame:
    table = manifest.groupby("label").agg(clips=("id", "size"), seconds=("duration", "sum"),
                                          groups=("group", "nunique"))
    if processed is not None:
        table["processed_clips"] = processed.groupby("label")["clip_id"].nunique()
        table["segments"] = processed.groupby("label").size()
    later = rejected[rejected["stage"] != "ingest"]
    label_of = manifest.set_index("id")["label"]
    clip_of = processed.set_index("id")["clip_id"] if processed is not None else pd.Series(dtype=str)
    ids = later["id"].map(lambda i: clip_of.get(i, i)).drop_duplicates()
    table["rejected_later"] = ids.map(label_of).value_counts()
    table = table.fillna(0)
    for col in table.columns:
        if col != "seconds":
            table[col] = table[col].astype(int)
    table["share"] = (table["clips"] / max(int(table["clips"].sum()), 1)).round(3)
    table.insert(1, "audio", table.pop("seconds").map(_fmt_seconds))
    return table.rename_axis("label").reset_index()


def _short_detail(row: dict) -> str:
    """The detail without its leading file name (the path column shows it)."""
    detail, path = str(row["detail"]), str(row["path"])
    for prefix in (f"'{path}': ", f"{path}: "):
        if detail.startswith(prefix):
            return detail[len(prefix):]
    return detail


def dataset_report(*, ingest_dir: Path, process_dir: Path, split_dir: Path, features_dir: Path,
                   out_dir: Path, dataset: str, n_shards: int | None = None,
                   max_listed: int = MAX_LISTED) -> Path:
    """Write ``out_dir/report.md`` (+ PNG figures and ``rejected.csv``) and return its path.

    Parameters
    ----------
    ingest_dir, process_dir, split_dir, features_dir : Path
        Stage folders of the run; process, split and features may be missing (the report says so).
    out_dir : Path
    dataset : str
        Dataset name for the title.
    n_shards : int, optional
        Read only shard tables ``000 .. n_shards-1`` (tables of an earlier run with more shards are
        stale); all shard tables when ``None``.
    max_listed : int
        Rejected files listed one by one in the Markdown (all of them are in ``rejected.csv``).
    """
    ingest_dir, process_dir, split_dir, features_dir, out_dir = map(
        Path, (ingest_dir, process_dir, split_dir, features_dir, out_dir))
    manifest = read_csv(ingest_dir / "manifest.csv")
    rejected = collect_rejected(ingest_dir=ingest_dir, process_dir=process_dir, features_dir=features_dir,
                                n_shards=n_shards)
    processed = _processed(process_dir, n_shards)
    splits = _splits(split_dir)
    counts = read_csv(split_dir / "counts.csv") if (split_dir / "counts.csv").is_file() else None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "rejected.csv", rejected)

    by_stage = rejected["stage"].value_counts()
    dur = pd.to_numeric(manifest["duration"], errors="coerce")
    n_groups = int(manifest["group"].nunique())
    text = [f"# Dataset report: {dataset}", "", "## Summary", ""]
    text.append(f"- ingest: **{len(manifest)}** usable clips of {len(manifest) + int(by_stage.get('ingest', 0))} "
                f"files examined, in **{manifest['label'].nunique()}** classes"
                + (f", **{n_groups}** group(s)" if n_groups else ", no groups (each clip is its own group)"))
    if len(dur):
        text.append(f"- total duration: {_fmt_seconds(float(dur.sum()))}; per clip min {dur.min():.2f} s, "
                    f"median {dur.median():.2f} s, mean {dur.mean():.2f} s, max {dur.max():.2f} s")
    if processed is not None:
        n_clips = processed["clip_id"].nunique()
        text.append(f"- processed: **{n_clips}** clips -> **{len(processed)}** segments, "
                    f"{_fmt_seconds(float(pd.to_numeric(processed['duration']).sum()))} of audio")
    else:
        text.append("- processed: not yet")
    stages = ", ".join(f"{s} {int(by_stage.get(s, 0))}" for s in ("ingest", "process", "features"))
    text.append(f"- rejected files: **{len(rejected)}** ({stages})")
    if splits is not None and len(splits):
        part = splits.groupby("split")
        text.append("- split: " + ", ".join(
            f"{s} **{part['clip_id'].nunique().get(s, 0)}** clips ({part.size().get(s, 0)} segments)" for s in SPLITS))
    text.append("")

    # Class balance
    text += ["## Class balance", ""]
    if len(manifest):
        classes = _class_table(manifest, processed, rejected)
        _figure(out_dir / "class_balance.png", lambda ax: _bars(ax, classes, processed is not None))
        text += ["![class balance](class_balance.png)", "", _md_table(classes), ""]
        ratio = classes["clips"].max() / max(classes["clips"].min(), 1)
        if ratio >= 3:
            text += [f"Imbalanced: the largest class has {ratio:.1f}x the clips of the smallest "
                     "(`random_forest.class_weight: balanced` compensates).", ""]
    else:
        text += ["No usable clip.", ""]

    # Durations
    text += ["## Durations", ""]
    if len(dur):
        after = pd.to_numeric(processed["duration"]) if processed is not None and len(processed) else None
        _figure(out_dir / "durations.png", lambda ax: _histogram(ax, dur, after))
        text += ["![durations](durations.png)", "", "Clip durations before processing:", "",
                 _md_table(duration_histogram(dur)), ""]
        if after is not None:
            text += [f"After processing (trim, pad/crop/segment): segments min {after.min():.2f} s, "
                     f"median {after.median():.2f} s, max {after.max():.2f} s.", ""]
    else:
        text += ["No clip.", ""]

    # Formats
    text += ["## Sample rates, channels and formats seen", ""]
    if len(manifest):
        for col, name in (("sample_rate", "sample_rate (Hz)"), ("channels", "channels"), ("format", "format")):
            seen = manifest[col].value_counts().sort_index().rename("clips").rename_axis(name).reset_index()
            text += [_md_table(seen), ""]
    else:
        text += ["None.", ""]

    # Rejected files
    text += ["## Rejected files", ""]
    if len(rejected):
        summary = rejected.groupby(["stage", "reason"], sort=False).size().rename("files").reset_index()
        listed = rejected[["stage", "reason", "path", "detail"]].head(max_listed)
        listed = listed.assign(detail=[_short_detail(r) for r in listed.to_dict("records")])
        text += [_md_table(summary), "", _md_table(listed), ""]
        if len(rejected) > max_listed:
            text += [f"... and {len(rejected) - max_listed} more: see `rejected.csv`.", ""]
        else:
            text += ["All of them, with clip ids, are in `rejected.csv`.", ""]
    else:
        text += ["None.", ""]

    # Splits
    text += ["## Split counts", ""]
    if counts is not None:
        text += ["Processed rows (segments) per label and split:", "", _md_table(counts), ""]
        if splits is not None and len(splits):
            group = splits["group"].fillna(splits["clip_id"])
            leaks = int((splits["split"].groupby(group).nunique() > 1).sum())
            text += [f"Groups: {group.nunique()}; groups found in more than one split: **{int(leaks)}**"
                     + (" (leakage!)" if leaks else ""), ""]
            body = counts[counts["label"].astype(str) != "total"]
            missing = [f"{row['label']} ({s})" for row in body.to_dict("records") for s in SPLITS
                       if s in row and row[s] == 0]
            if missing:
                text += ["Classes absent from a split: " + ", ".join(missing), ""]
    else:
        text += ["No split yet.", ""]

    path = out_dir / "report.md"
    write_text(path, "\n".join(text))
    return path


def _bars(ax, classes: pd.DataFrame, with_processed: bool) -> None:
    x = np.arange(len(classes))
    if with_processed:
        ax.bar(x - 0.2, classes["clips"], width=0.4, color="#4c72b0", label="ingested")
        ax.bar(x + 0.2, classes["processed_clips"], width=0.4, color="#dd8452", label="processed")
        ax.legend()
    else:
        ax.bar(x, classes["clips"], color="#4c72b0")
    rotate = len(classes) > 6
    ax.set_xticks(x, classes["label"].astype(str), rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel("clips")
    ax.set_title("clips per class")


def _histogram(ax, before: pd.Series, after: pd.Series | None) -> None:
    values = [before.dropna()] + ([after.dropna()] if after is not None else [])
    bins = np.histogram_bin_edges(np.concatenate([v.to_numpy(dtype=float) for v in values]), bins=40)
    ax.hist(values[0], bins=bins, color="#55a868", alpha=0.8, label="clips (before processing)")
    if after is not None:
        ax.hist(values[1], bins=bins, color="#c44e52", alpha=0.5, label="processed segments")
        ax.legend()
    ax.set_xlabel("seconds")
    ax.set_ylabel("count")
    ax.set_title("durations")
