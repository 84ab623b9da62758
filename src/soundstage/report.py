"""Stage ``report``: a Markdown dataset report with matplotlib figures.

Class balance, clip durations, sample rates and channel counts seen, every rejected file with its
stage and reason (ingest, process and features together), and the split counts per label.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from soundstage.io import atomic_path, read_csv, write_csv, write_text


def collect_rejected(*, ingest_dir: Path, process_dir: Path, features_dir: Path) -> pd.DataFrame:
    """All rejected-file tables of the run, in pipeline order."""
    files = [ingest_dir / "rejected.csv", *sorted((process_dir / "shards").glob("*.rejected.csv")),
             *sorted((features_dir / "shards").glob("*.rejected.csv"))]
    frames = [read_csv(f) for f in files if f.is_file()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["path", "id", "stage", "reason", "detail"])
    return pd.concat(frames, ignore_index=True)


def _figure(path: Path, draw) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    draw(ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _md_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def dataset_report(*, ingest_dir: Path, process_dir: Path, split_dir: Path, features_dir: Path,
                   out_dir: Path, dataset: str) -> Path:
    """Write ``out_dir/report.md`` (+ PNG figures and ``rejected.csv``) and return its path."""
    manifest = read_csv(ingest_dir / "manifest.csv")
    rejected = collect_rejected(ingest_dir=ingest_dir, process_dir=process_dir, features_dir=features_dir)
    counts = read_csv(split_dir / "counts.csv") if (split_dir / "counts.csv").is_file() else None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "rejected.csv", rejected)

    balance = manifest["label"].value_counts().sort_index()
    _figure(out_dir / "class_balance.png", lambda ax: (balance.plot.bar(ax=ax, color="#4c72b0"),
                                                       ax.set_ylabel("clips"), ax.set_title("clips per class")))
    _figure(out_dir / "durations.png", lambda ax: (ax.hist(manifest["duration"], bins=40, color="#55a868"),
                                                   ax.set_xlabel("seconds"), ax.set_ylabel("clips"),
                                                   ax.set_title("clip durations (before processing)")))
    rates = manifest.groupby(["sample_rate", "channels", "format"]).size().rename("clips").reset_index()
    dur = manifest["duration"]
    n_groups = manifest["group"].nunique()
    text = [
        f"# Dataset report: {dataset}", "",
        f"- usable clips: **{len(manifest)}** in **{manifest['label'].nunique()}** classes"
        + (f", **{n_groups}** groups" if n_groups else ", no groups"),
        f"- rejected files: **{len(rejected)}**",
        f"- total duration: {dur.sum() / 3600:.2f} h; per clip min {dur.min():.2f} s, median {dur.median():.2f} s, "
        f"max {dur.max():.2f} s" if len(dur) else "- total duration: 0", "",
        "## Class balance", "", "![class balance](class_balance.png)", "",
        _md_table(balance.rename("clips").rename_axis("label").reset_index()), "",
        "## Durations", "", "![durations](durations.png)", "",
        "## Sample rates, channels and formats seen", "", _md_table(rates), "",
        "## Rejected files", "",
    ]
    if len(rejected):
        text += [_md_table(rejected.groupby(["stage", "reason"]).size().rename("files").reset_index()), "",
                 _md_table(rejected[["stage", "reason", "detail"]]), ""]
    else:
        text += ["None.", ""]
    text += ["## Split counts", ""]
    text += [_md_table(counts) if counts is not None else "No split yet.", ""]
    path = out_dir / "report.md"
    write_text(path, "\n".join(text))
    return path
