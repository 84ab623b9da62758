"""Stage ``report``: a Markdown dataset report with matplotlib figures.

``reports/dataset/report.md`` holds: a summary (files found, usable, processed, rejected per stage
and the rejected share, classes, groups, hours), the class balance (ingested and processed clips,
segments, hours and groups per class; bar chart; classes with very few clips flagged), the clip
durations (histogram as a figure and as a table), the sample rates, channel counts and formats
seen, the rejected files (counts per reason with its meaning, how many each setting dropped, then
every file with its stage and reason: ingest, process and features together, also written to
``rejected.csv``), and the split (``data/split``: ``folds.csv``, ``folds.json``, ``counts.csv``): for one
fold its counts per label and split, for several a summary per fold (rows per split, test rows per
label); either way a check per fold that no group straddles two splits, and the classes absent from a
fold's test.

Beside it, ``examples/<label>/<clip>.png``: for a few clips of each class (:data:`EXAMPLES_PER_CLASS` of
at most :data:`MAX_EXAMPLE_CLASSES` classes, drawn with the run's ``seed``), the waveform of the processed
audio and the log-mel and MFCC matrices the features stage saved, one clip in memory at a time.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soundstage.io import atomic_path, read_csv, shard_files, write_csv, write_html_table, write_text
from soundstage.rejections import (
    NOT_COUNTED,
    REASONS,
    files_considered,
    format_summary,
    read_rejected,
    summarize_rejections,
)
from soundstage.split import REFIT, fold_ids, read_folds
from soundstage.store import STORE_COLUMNS, Stores

SPLITS = ("train", "val", "test")
#: Rejected files listed one by one in report.md; the rest are in rejected.csv.
MAX_LISTED = 500
#: A class with fewer clips than this, or than this share of the median class, is flagged: too few to
#: learn or score, and often a mistake (a folder named like a file, ``dog/bark.wav/``, became a class).
MIN_CLASS_CLIPS = 5
MIN_CLASS_SHARE_OF_MEDIAN = 0.01
#: Example figures: clips per class, classes shown (the first in label order), seconds of a clip drawn.
EXAMPLES_PER_CLASS = 2
MAX_EXAMPLE_CLASSES = 16
MAX_EXAMPLE_SECONDS = 30.0
#: The example figures' folder, beside report.md.
EXAMPLES_DIR = "examples"
#: Saved feature matrices an example figure draws (``features.save``), in panel order, and their titles.
EXAMPLE_MATRICES = {"logmel": "log-mel (dB)", "mfcc": "MFCC"}
#: A params key, with its value when the message gives one (``process.duration.min_seconds=0.25``).
_SETTING = re.compile(r"(?<![\w/.])((?:data|process|features)(?:\.[a-z_]+)+)(?:=([^\s,;)]+))?")


def collect_rejected(*, ingest_dir: Path, process_dir: Path, features_dir: Path,
                     n_shards: int | None = None) -> pd.DataFrame:
    """All rejected-file tables of the run, in pipeline order (``path, id, stage, reason, detail``):
    :func:`soundstage.rejections.read_rejected`."""
    return read_rejected(ingest_dir=ingest_dir, process_dir=process_dir, features_dir=features_dir,
                         n_shards=n_shards)


def small_classes(labels: pd.Series) -> dict[str, int]:
    """Classes with very few clips: ``{label: clips}``, fewest first.

    Parameters
    ----------
    labels : Series
        One label per clip (the manifest's ``label``, or the labels of the clips that reach training).

    Returns
    -------
    dict of str to int
        Classes with fewer than :data:`MIN_CLASS_CLIPS` clips or fewer than
        :data:`MIN_CLASS_SHARE_OF_MEDIAN` of the median class's clips.
    """
    counts = pd.Series(labels, dtype=object).dropna().astype(str).value_counts()
    if counts.empty:
        return {}
    floor = MIN_CLASS_SHARE_OF_MEDIAN * float(counts.median())
    small = counts[(counts < MIN_CLASS_CLIPS) | (counts < floor)]
    return {str(k): int(v) for k, v in sorted(small.items(), key=lambda kv: (kv[1], kv[0]))}


def small_class_warning(labels: pd.Series) -> str | None:
    """A warning naming the classes of :func:`small_classes`, or ``None`` when there are none.

    A label that looks like an audio file name (``bark.wav``) gets a hint: a folder named like a file
    inside a class folder (``dog/bark.wav/``) became a class of its own.
    """
    from soundstage.ingest import AUDIO_EXTENSIONS

    small = small_classes(labels)
    if not small:
        return None
    counts = pd.Series(labels, dtype=object).dropna().astype(str).value_counts()
    named = []
    for label, n in small.items():
        looks_like_file = label.rpartition(".")[2].lower() in AUDIO_EXTENSIONS and "." in label
        hint = " (named like an audio file: a folder such as <class>/" + label + "/ is a class of its own)" \
            if looks_like_file else ""
        named.append(f"'{label}' {n} clip{'s' if n != 1 else ''}{hint}")
    return (f"WARNING: {len(small)} of {len(counts)} classes have very few clips (fewer than {MIN_CLASS_CLIPS}, or "
            f"under {MIN_CLASS_SHARE_OF_MEDIAN:.0%} of the median class, {counts.median():g} clips): "
            + "; ".join(named) + ". Too few to learn or to score; check data.root and data.folder.label_level.")


def settings_dropped(rejected: pd.DataFrame) -> pd.DataFrame:
    """How many files each params setting dropped, from the rejected rows whose detail names it.

    Returns
    -------
    DataFrame
        ``setting, stage, reason, files``: ``setting`` is the params key(s) a detail names, with the
        value it gives (``process.duration.min_seconds=0.25``); most files first.
    """
    rows = []
    for row in rejected.to_dict("records"):
        found = _SETTING.findall(_short_detail(row))
        valued = [(k, v) for k, v in found if v]
        if found:  # the keys given with a value are the settings that decided; else every key named
            setting = ", ".join(dict.fromkeys(f"{k}={v}" if v else k for k, v in (valued or found)))
            rows.append({"setting": setting, "stage": row["stage"], "reason": row["reason"]})
    if not rows:
        return pd.DataFrame(columns=["setting", "stage", "reason", "files"])
    table = pd.DataFrame(rows).groupby(["setting", "stage", "reason"], sort=False).size().rename("files")
    return table.reset_index().sort_values("files", ascending=False, kind="stable", ignore_index=True)


def _processed(process_dir: Path, n_shards: int | None) -> pd.DataFrame | None:
    files = shard_files(process_dir / "shards", ".csv", n_shards)
    return pd.concat([read_csv(f) for f in files], ignore_index=True) if files else None


def _read_split(split_dir: Path) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame | None] | None:
    """The split stage's fold table, its info (``folds.json``; rebuilt from the table when missing)
    and counts, or ``None`` before the split."""
    if not (split_dir / "folds.csv").is_file():
        return None
    folds = read_folds(split_dir / "folds.csv")
    info_path = split_dir / "folds.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
    else:
        ids = [f for f in dict.fromkeys(folds["fold"].astype(str)) if f != REFIT]
        info = {"mode": None, "k": len(ids), "folds": [{"fold": f, "name": None} for f in ids],
                "refit": REFIT if (folds["fold"] == REFIT).any() else None}
    counts = read_csv(split_dir / "counts.csv", text=["fold"]) if (split_dir / "counts.csv").is_file() else None
    return folds, info, counts


def _fold_checks(folds: pd.DataFrame, counts: pd.DataFrame | None, fold: str) -> tuple[int, list[str]]:
    """Groups of ``fold`` found in more than one of its splits, and its classes without a test row."""
    rows = folds[folds["fold"] == fold]
    leaks = int((rows["split"].groupby(rows["group"].fillna(rows["clip_id"])).nunique() > 1).sum())
    if counts is None:
        return leaks, []
    body = counts[(counts["fold"].astype(str) == fold) & (counts["label"].astype(str) != "total")]
    return leaks, [str(label) for label, n in zip(body["label"], body["test"], strict=True) if n == 0]


def _split_text(folds: pd.DataFrame, info: dict[str, Any], counts: pd.DataFrame | None) -> list[str]:
    """The Split counts section: one fold as a label x split table, several as a summary per fold."""
    ids = fold_ids(info, refit=False)
    names = {str(f["fold"]): f.get("name") for f in info["folds"]}
    if len(ids) <= 1:
        fold = ids[0] if ids else "0"
        text = []
        if counts is not None:
            mine = counts[counts["fold"].astype(str) == fold].drop(columns="fold")
            text += ["Processed rows (segments) per label and split:", "", _md_table(mine), ""]
        rows = folds[folds["fold"] == fold]
        if len(rows):
            leaks, _ = _fold_checks(folds, counts, fold)
            text += [f"Groups: {rows['group'].fillna(rows['clip_id']).nunique()}; groups found in more than one "
                     f"split: **{leaks}**" + (" (leakage!)" if leaks else ""), ""]
        if counts is not None:
            body = mine[mine["label"].astype(str) != "total"]
            missing = [f"{row['label']} ({s})" for row in body.to_dict("records") for s in SPLITS if row[s] == 0]
            if missing:
                text += ["Classes absent from a split: " + ", ".join(missing), ""]
        return text
    summary, total_leaks = [], 0
    for fold in ids:
        rows = folds[folds["fold"] == fold]
        leaks, absent = _fold_checks(folds, counts, fold)
        total_leaks += leaks
        summary.append({"fold": fold, "name": "" if names.get(fold) is None else str(names[fold]),
                        **{s: int((rows["split"] == s).sum()) for s in SPLITS},
                        "test clips": int(rows.loc[rows["split"] == "test", "clip_id"].nunique()),
                        "groups in two splits": leaks, "classes absent from test": ", ".join(absent)})
    text = [f"**{len(ids)}** folds (split.mode {info.get('mode') or '?'}); processed rows (segments) per split of "
            "each fold:", "", _md_table(pd.DataFrame(summary)), "",
            f"Groups found in more than one split of a fold: **{total_leaks}**"
            + (" (leakage!)" if total_leaks else ""), ""]
    refit = folds[folds["fold"] == REFIT]
    if info.get("refit") is not None and len(refit):
        text += [f"Refit fold `{REFIT}` (the final model): train **{int((refit['split'] == 'train').sum())}**, "
                 f"val **{int((refit['split'] == 'val').sum())}** rows.", ""]
    if counts is not None:
        body = counts[counts["label"].astype(str) != "total"]
        test = body.pivot_table(index="label", columns="fold", values="test", aggfunc="sum", fill_value=0)
        test = test.reindex(columns=[f for f in ids if f in test.columns]).rename_axis(columns=None)
        text += ["Test rows per label (rows) and fold (columns):", "", _md_table(test.reset_index()), ""]
    return text


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


def formats_seen(manifest: pd.DataFrame) -> pd.DataFrame:
    """Clips per ``format, sample_rate, channels`` of the manifest (``clips`` column), most common first."""
    keys = ["format", "sample_rate", "channels"]
    if not len(manifest):
        return pd.DataFrame(columns=[*keys, "clips"])
    seen = manifest.groupby(keys, dropna=False).size().rename("clips").reset_index()
    return seen.sort_values(["clips", *keys], ascending=[False, True, True, True], kind="stable").reset_index(
        drop=True)


def _md_table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table: text cells on one line with ``|`` escaped, and never read as
    numbers (a label ``007`` stays ``007``); cells unpadded."""
    text = [i for i, dtype in enumerate(frame.dtypes) if not pd.api.types.is_numeric_dtype(dtype)]
    cells = frame.replace({r"\s+": " ", r"\|": r"\|"}, regex=True)
    # tabulate counts the columns of the rows: an empty table has none to exempt from number parsing
    return cells.to_markdown(index=False, numalign=None, stralign=None, disable_numparse=text if len(frame) else True)


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
                   max_listed: int = MAX_LISTED, max_rejected_share: float | None = None, seed: int = 0,
                   saved: Sequence[str] = tuple(EXAMPLE_MATRICES)) -> Path:
    """Write ``out_dir/report.md``, its figures (``class_balance.png``, ``durations.png``, and the
    example figures under ``examples/``, see :func:`write_examples`), ``rejected.csv``, and the tables of
    the Snakemake report as HTML (``rejected.html``, ``formats.html``: :func:`formats_seen`,
    ``split_counts.html``: the split's ``counts.csv``, "None." before the split); return the report's
    path.

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
    max_rejected_share : float, optional
        ``params.yaml: data.max_rejected_share``, shown beside the rejected share.
    seed : int
        ``params.yaml: seed``: which clips the example figures show (:func:`choose_examples`).
    saved : sequence of str
        ``params.yaml: features.save``: the matrices the features stage stored under
        ``features_dir/<name>/``; the examples draw those of :data:`EXAMPLE_MATRICES`.
    """
    ingest_dir, process_dir, split_dir, features_dir, out_dir = map(
        Path, (ingest_dir, process_dir, split_dir, features_dir, out_dir))
    manifest = read_csv(ingest_dir / "manifest.csv")
    rejected = collect_rejected(ingest_dir=ingest_dir, process_dir=process_dir, features_dir=features_dir,
                                n_shards=n_shards)
    processed = _processed(process_dir, n_shards)
    split = _read_split(split_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "rejected.csv", rejected)
    counts = split[2] if split is not None and split[2] is not None else pd.DataFrame(
        columns=["fold", "label", *SPLITS, "total"])
    for name, frame, title in (("rejected", rejected, "Rejected files"),
                               ("formats", formats_seen(manifest), "Clips per format, sample rate and channels"),
                               ("split_counts", counts, "Rows per class and split, per fold")):
        write_html_table(out_dir / f"{name}.html", frame, title=title)

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
    summary = summarize_rejections(
        considered=files_considered(manifest=manifest, ingest_rejected=rejected[rejected["stage"] == "ingest"]),
        tables=[rejected])
    limit = (f"; the run stops above `data.max_rejected_share` = {max_rejected_share:g}"
             if max_rejected_share is not None else "")
    text.append(f"- {format_summary(summary)[:-1]}{limit}")
    if split is not None and len(split[0]):
        folds, info = split[0], split[1]
        ids = fold_ids(info, refit=False)
        if len(ids) <= 1:
            part = folds[folds["fold"] == (ids[0] if ids else "0")].groupby("split")
            text.append("- split: " + ", ".join(f"{s} **{part['clip_id'].nunique().get(s, 0)}** clips "
                                                f"({part.size().get(s, 0)} segments)" for s in SPLITS))
        else:
            tested = folds[folds["split"] == "test"].groupby("fold")["clip_id"].nunique().reindex(ids, fill_value=0)
            text.append(f"- split: **{len(ids)}** folds (split.mode {info.get('mode') or '?'}), "
                        f"{tested.min()}-{tested.max()} test clips each" +
                        (f", and the refit fold `{REFIT}`" if info.get("refit") is not None else ""))
    text.append("")

    # Class balance
    text += ["## Class balance", ""]
    if len(manifest):
        classes = _class_table(manifest, processed, rejected)
        _figure(out_dir / "class_balance.png", lambda ax: _bars(ax, classes, processed is not None))
        text += ["![class balance](class_balance.png)", "", _md_table(classes), ""]
        warning = small_class_warning(manifest["label"])
        if warning:
            text += [f"**{warning}**", ""]
        ratio = classes["clips"].max() / max(classes["clips"].min(), 1)
        if ratio >= 3:
            text += [f"Imbalanced: the largest class has {ratio:.1f}x the clips of the smallest "
                     "(`random_forest.class_weight: balanced` compensates).", ""]
    else:
        _figure(out_dir / "class_balance.png", lambda ax: _nothing(ax, "clips per class", "no usable clip"))
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
        _figure(out_dir / "durations.png", lambda ax: _nothing(ax, "durations", "no clip"))
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
        per_reason = rejected.groupby(["stage", "reason"], sort=False).size().rename("files").reset_index()
        per_reason["meaning"] = [REASONS.get(r, "?") + (" (not counted)" if r in NOT_COUNTED else "")
                                 for r in per_reason["reason"]]
        text += [_md_table(per_reason), ""]
        dropped = settings_dropped(rejected)
        if len(dropped):
            text += ["What the settings dropped:", ""]
            text += [f"- `{r['setting']}` dropped **{r['files']}** file{'s' if r['files'] != 1 else ''} "
                     f"({r['stage']}: {r['reason']})" for r in dropped.to_dict("records")]
            text.append("")
        silent = int((rejected["reason"] == "silent").sum())
        if silent:
            text += [f"- **{silent}** clip{'s are' if silent != 1 else ' is'} silent (peak below -120 dBFS): "
                     "nothing to keep, whatever the settings.", ""]
        listed = rejected[["stage", "reason", "path", "detail"]].head(max_listed)
        listed = listed.assign(detail=[_short_detail(r) for r in listed.to_dict("records")])
        text += [_md_table(listed), ""]
        if len(rejected) > max_listed:
            text += [f"... and {len(rejected) - max_listed} more: see `rejected.csv`.", ""]
        else:
            text += ["All of them, with clip ids, are in `rejected.csv`.", ""]
    else:
        text += ["None.", ""]

    # Splits
    text += ["## Split counts", ""]
    text += _split_text(*split) if split is not None else ["No split yet.", ""]

    # Examples
    text += ["## Examples", ""]
    candidates = _feature_rows(features_dir, n_shards)
    chosen = choose_examples(candidates, seed=seed)
    if len(chosen) and "store" in candidates.columns:  # where each chosen clip's matrices are
        chosen = chosen.merge(candidates[["id", *STORE_COLUMNS]].drop_duplicates("id"), on="id", how="left")
    examples = write_examples(chosen, audio_dir=process_dir / "audio", audio=processed,
                              features_dir=features_dir, saved=saved, out_dir=out_dir / EXAMPLES_DIR)
    if len(examples):
        n_labels = candidates["label"].nunique()
        shown = examples["label"].nunique()
        drawn = [EXAMPLE_MATRICES[name] for name in EXAMPLE_MATRICES if name in saved]
        text += [f"Up to {EXAMPLES_PER_CLASS} clips per class (drawn with `seed` {seed}"
                 + (f"; the first {shown} of {n_labels} classes" if shown < n_labels else "")
                 + "): the processed waveform" + "".join(f", {d}" for d in drawn)
                 + f" (the first {MAX_EXAMPLE_SECONDS:g} s of a longer clip).", ""]
        for label, mine in examples.groupby("label", sort=False):
            text += [f"### {label}", ""]
            for r in mine.to_dict("records"):
                text += [f"![{r['clip_id']}]({EXAMPLES_DIR}/{r['file']})", ""]
    else:
        text += ["No clip with features yet.", ""]

    path = out_dir / "report.md"
    write_text(path, "\n".join(text))
    return path


def _feature_rows(features_dir: Path, n_shards: int | None) -> pd.DataFrame:
    """``id, clip_id, label`` and ``store, offset, frames`` of every clip with features (the features
    stage's shard tables; the store columns only when the tables have them)."""
    import pyarrow.parquet as pq

    files = shard_files(features_dir / "shards", ".parquet", n_shards)
    frames = []
    for f in files:
        names = pq.read_schema(f).names
        frame = pd.read_parquet(f, columns=["id", "clip_id", "label"]
                                + [c for c in STORE_COLUMNS if c in names]).astype({"id": str, "clip_id": str,
                                                                                   "label": str})
        if len(frame):
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["id", "clip_id", "label"], dtype=object)
    return pd.concat(frames, ignore_index=True)


def choose_examples(rows: pd.DataFrame, *, seed: int, per_class: int = EXAMPLES_PER_CLASS,
                    max_classes: int = MAX_EXAMPLE_CLASSES) -> pd.DataFrame:
    """The clips the example figures show: ``per_class`` clips of each of the first ``max_classes``
    labels (in sorted order), drawn from ``np.random.default_rng([seed, crc32(label)])``: the same seed
    and clips give the same choice, and a class's choice does not move when other classes change.

    Parameters
    ----------
    rows : DataFrame
        ``id, clip_id, label``, a row per processed clip or segment (the features shard tables); a
        clip is drawn once, shown by its first row.

    Returns
    -------
    DataFrame
        ``id, clip_id, label`` of the chosen rows, by label, then clip id.
    """
    columns = ["id", "clip_id", "label"]
    if rows.empty or per_class <= 0 or max_classes <= 0:
        return pd.DataFrame(columns=columns, dtype=object)
    first = rows[columns].astype(str).drop_duplicates("clip_id")
    chosen = []
    for label in sorted(first["label"].unique())[:max_classes]:
        mine = first[first["label"] == label].sort_values("clip_id", kind="stable")
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        chosen.append(mine.iloc[np.sort(rng.choice(len(mine), size=min(per_class, len(mine)), replace=False))])
    return pd.concat(chosen, ignore_index=True)


def _safe_name(text: str, taken: set[str]) -> str:
    """A file name for ``text`` (letters, digits, ``._-``; at most 80 characters) not in ``taken``."""
    base = re.sub(r"[^\w.-]+", "_", text).strip("._")[:80] or "_"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    taken.add(name)
    return name


def write_examples(examples: pd.DataFrame, *, audio_dir: Path, audio: pd.DataFrame | None, features_dir: Path,
                   saved: Sequence[str], out_dir: Path, max_seconds: float = MAX_EXAMPLE_SECONDS) -> pd.DataFrame:
    """One figure per row of ``examples`` (:func:`choose_examples`) at ``out_dir/<label>/<clip>.png``
    (names made safe for a file system): the processed audio (in the stores of ``audio_dir``, where
    the process index ``audio`` places each id: ``store, offset, frames, sample_rate``) and the matrices
    of :data:`EXAMPLE_MATRICES` named in ``saved``, from the stores the rows' ``store, offset, frames``
    name (``features_dir/<name>/<id>.npy`` for rows without them), at most
    ``max_seconds`` of each; see :func:`plot_example`. Any other PNG under ``out_dir`` (an earlier
    choice) is removed; ``out_dir`` exists afterwards, empty when there is nothing to show.

    Returns
    -------
    DataFrame
        ``examples`` with ``file``, each figure's path relative to ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders: set[str] = set()
    files: dict[str, set[str]] = {}
    folder_of: dict[str, str] = {}
    written = []
    places = {}  # id -> where its samples are, for the rows shown; an index of before stores has none
    if audio is not None and {"store", "offset", "frames", "sample_rate"} <= set(audio.columns):
        shown = audio[audio["id"].astype(str).isin(examples["id"].astype(str))].dropna(
            subset=["store", "offset", "frames", "sample_rate"])
        places = {str(i): (Path(audio_dir) / f"{st}.npy", int(o), int(n), int(sr))
                  for i, st, o, n, sr in zip(shown["id"], shown["store"], shown["offset"], shown["frames"],
                                             shown["sample_rate"], strict=True)}
    for row in examples.to_dict("records"):
        label = str(row["label"])
        if label not in folder_of:
            folder_of[label] = _safe_name(label, folders)
        folder = folder_of[label]
        name = _safe_name(str(row["clip_id"]), files.setdefault(folder, set()))
        has_store = isinstance(row.get("store"), str)
        matrices = {kind: (Path(features_dir) / kind / f"{row['store']}.npy", int(row["offset"]), int(row["frames"]))
                    if has_store else Path(features_dir) / kind / f"{row['id']}.npy"
                    for kind in EXAMPLE_MATRICES if kind in saved}
        plot_example(clip_id=str(row["clip_id"]), segment_id=str(row["id"]), label=label,
                     audio=places.get(str(row["id"])), matrices=matrices,
                     path=out_dir / folder / f"{name}.png", max_seconds=max_seconds)
        written.append(f"{folder}/{name}.png")
    keep = {out_dir / f for f in written}
    for old in sorted(out_dir.rglob("*.png")):
        if old not in keep:
            old.unlink()
    for folder in sorted((d for d in out_dir.rglob("*") if d.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return examples.assign(file=written)


def plot_example(*, clip_id: str, segment_id: str, label: str, audio: tuple[Path, int, int, int] | None,
                 matrices: dict[str, Path | tuple[Path, int, int]],
                 path: Path, max_seconds: float = MAX_EXAMPLE_SECONDS) -> None:
    """Write one clip's figure: its waveform (min/max envelope of the processed audio, ``audio`` =
    ``(store path, offset, samples, sample rate)`` in a process audio store, multichannel downmixed)
    and a panel per matrix of ``matrices`` (``{kind: (store path, offset, frames)}``, or a ``.npy``
    path of one matrix; float32 ``(n_bins, n_frames)``, memory-mapped: only the frames drawn are
    read), on one time axis in seconds (the frames
    spread over the audio's duration), at most the first ``max_seconds``. The log-mel is drawn in dB;
    each MFCC row (coefficient, then its deltas) is scaled to zero mean and unit variance over time, as
    the first coefficient (the level) would otherwise take the whole colour scale. A missing or
    unreadable file leaves its panel with a note instead of failing the report. The title names the clip
    and its class (and the segment, when the clip was cut into several)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from soundstage.decode import downmix_frames

    rows = 1 + len(matrices)
    fig, grid = plt.subplots(rows, 2, figsize=(8, 2.1 + 2.0 * len(matrices)), squeeze=False,
                             gridspec_kw={"width_ratios": [50, 1]})
    axes, bars = grid[:, 0], grid[:, 1]
    bars[0].axis("off")
    total = shown = None  # seconds
    try:
        if audio is None:
            raise FileNotFoundError("not in the process index")
        store, offset, samples, sr = audio
        n = min(samples, int(max_seconds * sr))
        y = Stores(store.parent, stage="process").block(store.stem, offset, samples)[:n]  # (n, channels)
        y = downmix_frames(y) if y.shape[1] > 1 else np.asarray(y[:, 0])
        total, shown = samples / sr, n / sr
        _waveform(axes[0], y, sr)
    except (OSError, ValueError) as exc:
        where = "not in the process index" if audio is None else f"{audio[0]} at sample {audio[1]}"
        _note(axes[0], f"no processed audio: {where} ({type(exc).__name__})")
    axes[0].set_title("waveform", fontsize=9)
    for ax, bar, (kind, npy) in zip(axes[1:], bars[1:], matrices.items(), strict=True):
        ax.set_title(EXAMPLE_MATRICES.get(kind, kind) + (" (each row standardized)" if kind == "mfcc" else ""),
                     fontsize=9)
        try:
            if isinstance(npy, tuple):  # (store, offset, frames)
                m = Stores(npy[0].parent).matrix(npy[0].stem, npy[1], npy[2])
            else:
                m = np.load(npy, mmap_mode="r")
            if m.ndim != 2:
                raise ValueError(f"shape {m.shape}")
        except (OSError, ValueError) as exc:
            where = f"{npy[0]} at frame {npy[1]}" if isinstance(npy, tuple) else npy
            _note(ax, f"no {kind} matrix: {where} ({type(exc).__name__})")
            bar.axis("off")
            continue
        frames = m.shape[1]
        keep = frames if not total else min(frames, max(1, math.ceil(frames * shown / total)))
        image = np.asarray(m[:, :keep], dtype=np.float64)
        if kind == "mfcc":
            image = (image - image.mean(axis=1, keepdims=True)) / np.maximum(image.std(axis=1, keepdims=True), 1e-8)
        extent = (0.0, shown if total else float(keep), 0.0, float(m.shape[0]))
        drawn = ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest", extent=extent,
                          cmap="magma" if kind == "logmel" else "coolwarm",
                          **({"vmin": -3.0, "vmax": 3.0} if kind == "mfcc" else {}))
        fig.colorbar(drawn, cax=bar)
        ax.set_ylabel("mel band" if kind == "logmel" else "row")
        ax.set_xlabel("seconds" if total else "frame")
    title = f"{clip_id} ({label})" + (f", segment {segment_id}" if segment_id != clip_id else "")
    if total and shown < total:
        title += f": the first {shown:g} of {total:.1f} s"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _waveform(ax, y: np.ndarray, sr: int, *, width: int = 2000) -> None:
    """``y`` (mono, ``sr`` Hz) as a min/max envelope of at most ``width`` columns."""
    if y.size == 0:
        _note(ax, "empty audio")
        return
    hop = max(1, math.ceil(len(y) / width))
    if hop == 1:
        ax.plot(np.arange(len(y)) / sr, y, color="#4c72b0", linewidth=0.6)
    else:
        blocks = np.pad(y, (0, (-len(y)) % hop), mode="edge").reshape(-1, hop)
        t = np.arange(len(blocks)) * hop / sr
        ax.fill_between(t, blocks.min(axis=1), blocks.max(axis=1), color="#4c72b0", linewidth=0)
    peak = max(1.0, float(np.abs(y).max()))
    ax.set_ylim(-1.05 * peak, 1.05 * peak)
    ax.set_xlim(0.0, len(y) / sr)
    ax.set_ylabel("amplitude")
    ax.set_xlabel("seconds")


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _nothing(ax, title: str, text: str) -> None:
    _note(ax, text)
    ax.set_title(title)


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
