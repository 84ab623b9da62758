"""``soundstage <stage>``: thin command-line wrappers over the stage modules.

Each subcommand reads and validates ``params.yaml`` once, picks the keys its stage needs, and calls
the stage's core function with explicit keyword arguments. Snakemake rules and DVC stages call these.
"""

from __future__ import annotations

import os

from soundstage import worker

# A worker is one process per shard: one BLAS/OpenMP/numba thread each and a heap it keeps, set
# before numpy loads (parallel shards would oversubscribe the cores; some BLAS builds hang).
worker.setup()
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from soundstage.config import ParamsError, load_params  # noqa: E402


def _progress() -> bool:
    return sys.stderr.isatty() or os.environ.get("SOUNDSTAGE_PROGRESS") == "1"


def _print_rejected(rejected: Any, what: str) -> None:
    if len(rejected):
        print(f"{what}: rejected {len(rejected)} file(s):", file=sys.stderr)
        for r in rejected.head(20).to_dict("records"):
            print(f"  [{r['reason']}] {r['detail']}", file=sys.stderr)
        if len(rejected) > 20:
            print(f"  ... and {len(rejected) - 20} more (see the rejected table)", file=sys.stderr)


def _n_shards(p: dict[str, Any]) -> int:
    """``sharding.n_shards``, resolved from the data when ``auto`` and no ``--n-shards`` was given."""
    from soundstage.ingest import resolve_n_shards

    return resolve_n_shards(p)


def cmd_shards(args: argparse.Namespace, p: dict[str, Any]) -> None:
    n = _n_shards(p)
    if not args.patterns:
        print(n)
        return
    print(" ".join(pattern.replace("{}", f"{i:03d}") for pattern in args.patterns for i in range(n)))


def cmd_demo(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.demo import make_demo

    d = p["demo"]
    rows = make_demo(out_dir=Path(args.out), n_classes=d["n_classes"], clips_per_class=d["clips_per_class"],
                     n_artists=d["n_artists"], duration=d["duration"], sample_rate=d["sample_rate"], seed=p["seed"])
    print(f"demo: wrote {len(rows)} clips of {rows['label'].nunique()} classes to {args.out}")


def cmd_ingest(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.ingest import ingest
    from soundstage.io import write_csv
    from soundstage.rejections import check_rejected_share, files_considered, summarize_rejections

    d = p["data"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest, rejected = ingest(
            root=d["root"], layout=d["layout"], extensions=d["extensions"], label_level=d["folder"]["label_level"],
            group_regex=d["folder"]["group_regex"], csv_path=d["csv"]["path"], path_column=d["csv"]["path_column"],
            label_column=d["csv"]["label_column"], group_column=d["csv"]["group_column"],
            transcript_column=d["csv"]["transcript_column"], pattern=d["regex"]["pattern"],
            n_shards=_n_shards(p), progress=_progress())
    for w in caught:
        print(f"ingest: WARNING: {w.message}", file=sys.stderr)
    out = Path(args.out_dir)
    write_csv(out / "rejected.csv", rejected)
    write_csv(out / "manifest.csv", manifest)
    _print_rejected(rejected, "ingest")
    print(f"ingest: {len(manifest)} clips, {manifest['label'].nunique()} labels, "
          f"{manifest['group'].nunique()} groups, {len(rejected)} rejected -> {out / 'manifest.csv'}")
    if manifest.empty:
        raise SystemExit(f"ingest: no usable audio found under {d['root']} (layout {d['layout']})")
    # Stop here when most of the dataset is already lost (e.g. a format misjudged), not after training.
    check_rejected_share(summarize_rejections(considered=files_considered(manifest=manifest, ingest_rejected=rejected),
                                              tables=[rejected]), max_share=d["max_rejected_share"])


def cmd_process(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.dsp import ProcessConfig
    from soundstage.io import read_csv, write_csv
    from soundstage.process import process_shard

    out = Path(args.out_dir)
    shard_name = f"{args.shard:03d}"
    manifest = read_csv(args.manifest)
    rows = manifest[manifest["shard"] == args.shard]
    cache_file = out / "cache" / f"{shard_name}.csv"
    previous = read_csv(cache_file) if cache_file.is_file() else None
    # The whole manifest: the shard job picks its rows, and knows which clips moved to other shards.
    index, rejected = process_shard(manifest=manifest, out_dir=out, config=ProcessConfig.from_dict(p["process"]),
                                    shard=args.shard, n_shards=_n_shards(p), previous=previous,
                                    relative_to=Path.cwd(),
                                    progress=_progress(), checkpoint=lambda done: write_csv(cache_file, done))
    # The cache first: a run killed after it reuses every clip of this shard.
    write_csv(cache_file, index)
    write_csv(out / "shards" / f"{shard_name}.rejected.csv", rejected)
    write_csv(out / "shards" / f"{shard_name}.csv", index.drop(columns="stamp"))
    _print_rejected(rejected, f"process[{shard_name}]")
    print(f"process[{shard_name}]: {len(rows)} clips -> {len(index)} segments, {len(rejected)} rejected")


def cmd_split(args: argparse.Namespace, p: dict[str, Any]) -> None:
    import pandas as pd

    from soundstage.io import read_csv, write_csv, write_json
    from soundstage.split import read_fold_lists, read_lists, split_dataset

    sp = p["split"]
    rows = pd.concat([read_csv(f) for f in args.inputs], ignore_index=True)
    # The manifest only in the modes that read it: ratio, kfold and leave_one_group_out split the rows alone.
    column = sp["column"]["name"] if sp["mode"] == "column" else None
    clips = read_csv(args.manifest, text=[column] if column else []) if sp["mode"] in ("column", "lists") else None
    lists = read_lists(sp["lists"]) if sp["mode"] == "lists" else None
    fold_lists = read_fold_lists(sp["lists"]["folds"]) if sp["mode"] == "lists" and sp["lists"]["folds"] else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = split_dataset(rows, seed=p["seed"], mode=sp["mode"], ratios=sp["ratios"], stable=sp["stable"],
                               clips=clips, column=column, test=sp["column"]["test"], val=sp["column"]["val"],
                               lists=lists, root=p["data"]["root"], val_share=sp["val_share"], k=sp["k"],
                               column_folds=sp["column"]["folds"], fold_lists=fold_lists)
    for w in caught:
        print(f"split: WARNING: {w.message}", file=sys.stderr)
    out = Path(args.out_dir)
    write_csv(out / "folds.csv", result.folds)
    write_json(out / "folds.json", result.info)
    write_csv(out / "counts.csv", result.counts)
    write_csv(out / "unassigned.csv", result.unassigned)
    _print_left_out(result.unassigned, result.unmatched, out / "unassigned.csv")
    info = result.info
    if info["k"] == 1:
        print(result.counts.drop(columns="fold").to_string(index=False))
    else:
        print(pd.DataFrame(info["folds"]).to_string(index=False))
        print(f"split: {info['k']} folds ({info['mode']}), split.hash {info['hash']}")


def _print_left_out(unassigned: Any, unmatched: Any, where: Path) -> None:
    """Warn about clips the data put in no split, and list entries that name no clip to split."""
    if len(unassigned):
        clips = unassigned["clip_id"].astype(str).drop_duplicates()
        why = ", ".join(f"{n} {r}" for r, n in unassigned.drop_duplicates("clip_id")["reason"].value_counts().items())
        rows = f" ({len(unassigned)} rows)" if len(unassigned) != len(clips) else ""
        print(f"split: WARNING: {len(clips)} clip(s){rows} in no split, not trained or scored on ({why}): "
              f"{', '.join(clips.head(5))}{' ...' if len(clips) > 5 else ''} (see {where})", file=sys.stderr)
    if len(unmatched):
        print(f"split: WARNING: {len(unmatched)} list entr{'y names' if len(unmatched) == 1 else 'ies name'} no "
              "clip to split:", file=sys.stderr)
        for r in unmatched.head(10).to_dict("records"):
            print(f"  split.lists.{r['list']}: {r['entry']!r}: {r['reason']}", file=sys.stderr)
        if len(unmatched) > 10:
            print(f"  ... and {len(unmatched) - 10} more", file=sys.stderr)


def cmd_features(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.features import (
        INTERNAL_COLUMNS,
        build_table,
        feature_columns,
        features_shard,
        read_table,
        write_table,
    )
    from soundstage.features_core import FeatureConfig
    from soundstage.io import read_csv, write_csv, write_parquet

    out = Path(args.out_dir)
    if args.table:
        from soundstage.rejections import check_rejected_share, summarize_run

        # Every stage's rejections are known now: the last point to stop before training on what is left.
        check_rejected_share(summarize_run(ingest_dir=args.ingest_dir, process_dir=args.process_dir, features_dir=out,
                                           n_shards=_n_shards(p)),
                             max_share=p["data"]["max_rejected_share"])
        # The moments and cache keys are the stats stage's and the cache's: never read here.
        table = build_table(shard_tables=(read_table(f, drop=INTERNAL_COLUMNS) for f in args.inputs))
        write_parquet(out / "table.parquet", table)
        n = len(feature_columns(table))
        print(f"features: table of {len(table)} clips x {n} features -> {out / 'table.parquet'}")
        return
    f = dict(p["features"])
    save = tuple(f.pop("save"))
    shard_name = Path(args.index).stem
    cache_file = out / "cache" / f"{shard_name}.parquet"
    previous = read_table(cache_file) if cache_file.is_file() else None
    # The index lives in <process dir>/shards/, its samples in <process dir>/audio/.
    audio_dir = args.audio_dir or Path(args.index).parent.parent / "audio"
    table, rejected = features_shard(index=read_csv(args.index), audio_dir=audio_dir, out_dir=out,
                                     config=FeatureConfig.from_dict(f), save=save, previous=previous,
                                     shard=int(shard_name) if shard_name.isdigit() else None,
                                     n_shards=_n_shards(p), progress=_progress(),
                                     checkpoint=lambda done: write_table(cache_file, done))
    # The cache first: a run killed after it reuses every clip of this shard.
    write_table(cache_file, table)
    write_csv(out / "shards" / f"{shard_name}.rejected.csv", rejected)
    write_table(out / "shards" / f"{shard_name}.parquet", table.drop(columns="stamp"))
    _print_rejected(rejected, f"features[{shard_name}]")
    print(f"features[{shard_name}]: {len(table)} clips, {len(rejected)} rejected")


def cmd_stats(args: argparse.Namespace, p: dict[str, Any]) -> None:
    import numpy as np

    from soundstage import stats
    from soundstage.io import save_npz, write_json
    from soundstage.split import read_folds

    folds = read_folds(args.folds)
    train_ids = stats.train_ids(folds, fold=args.fold)
    # One shard table in memory at a time: memory stays flat in dataset size.
    tables = (stats.read_moments(f) for f in args.inputs)
    m = stats.train_moments(shard_tables=tables, train_ids=train_ids)
    out = Path(args.out_dir)
    save_npz(out / "logmel.npz", mean=m.mean, std=m.std, count=np.asarray(m.count))
    write_json(out / "logmel.json", {"count": m.count, "n_clips": len(train_ids), "mean": m.mean, "std": m.std})
    if p["stats"]["export_normalized"]:
        n = stats.export_normalized(shard_tables=args.inputs, logmel_dir=args.logmel_dir, out_dir=out / "normalized",
                                    mean=m.mean, std=m.std)
        print(f"stats: wrote {n} normalized log-mels to {out / 'normalized'}")
    print(f"stats[{args.fold}]: {m.count} train frames from {len(train_ids)} clips -> {out / 'logmel.npz'}")


def cmd_train(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage import tracking
    from soundstage.config import augment_params, model_params
    from soundstage.train import train

    inputs = {"table": args.table, "folds": args.folds, **({"stats": args.stats} if args.model == "keras_cnn" else {})}
    augment = augment_params(p, args.model)
    bundle = train(model=args.model, table_path=args.table, folds_path=args.folds, fold=args.fold,
                   out_dir=args.out_dir, params=dict(p[args.model]),
                   seed=p["seed"], process_params=p["process"],
                   feature_params={k: v for k, v in p["features"].items() if k != "save"},
                   experiment=p["data"]["name"], tracking_uri=tracking.tracking_uri(p["mlflow"]["tracking_uri"]),
                   tags=tracking.run_tags(p, inputs), flat_params=model_params(p, args.model), n_jobs=args.threads,
                   logmel_dir=args.logmel_dir if args.model == "keras_cnn" else None,
                   stats_path=args.stats if args.model == "keras_cnn" else None,
                   augment=augment, process_dir=args.process_dir,
                   n_shards=_n_shards(p) if augment else None,  # the count only when augmentation reads the shards
                   data_root=p["data"]["root"], manifest_path=args.manifest)
    t = bundle.meta["training"]
    print(f"train[{args.model}, fold {args.fold}]: {t['n_train']} train clips (+{t['n_augmented']} augmented), "
          f"{t['n_val']} val -> {args.out_dir} (MLflow run {bundle.meta['mlflow']['run_id']})")


def cmd_evaluate(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.evaluate import combine_metrics, evaluate, format_table
    from soundstage.io import write_json

    if args.summary:
        from soundstage.cache import key_of
        from soundstage.config import model_params

        # By default the models params.yaml trains (an old model's folder may remain in reports/).
        inputs = args.inputs or [f"reports/evaluate/{m}/metrics.json" for m in p["train"]["models"]]
        models = {json.loads(Path(f).read_text(encoding="utf-8"))["model"] for f in inputs}
        hashes = {m: key_of(model_params(p, m)) for m in models if m in p}
        summary = combine_metrics(metrics_files=inputs, params_hashes=hashes)
        if args.out:
            write_json(args.out, summary)
        print(format_table(summary))
        return
    if args.aggregate:
        from soundstage import tracking
        from soundstage.evaluate import aggregate_folds
        from soundstage.split import fold_ids

        info = json.loads(Path(args.split_info).read_text(encoding="utf-8"))
        # By default every evaluated fold of the split, each in its folder under --out-dir.
        folds = args.inputs or [Path(args.out_dir) / "folds" / fold for fold in fold_ids(info, refit=False)]
        m = aggregate_folds(fold_dirs=folds, out_dir=args.out_dir, split_info=info,
                            tracking_uri=tracking.tracking_uri(p["mlflow"]["tracking_uri"]),
                            log_to_mlflow=not args.no_mlflow)
        acc = {s: f"{m[s].get('accuracy', float('nan')):.3f} ± {m[s].get('accuracy_std', 0.0):.3f}"
               for s in ("val", "test")}
        print(f"evaluate[{m['model']}]: {m['n_folds']} fold(s): val acc {acc['val']}, test acc {acc['test']}")
        return
    m = evaluate(bundle_dir=args.bundle, table_path=args.table, out_dir=args.out_dir, logmel_dir=args.logmel_dir,
                 folds_path=args.folds, fold=args.fold, log_to_mlflow=not args.no_mlflow,
                 bootstrap=p["evaluate"]["bootstrap"], seed=p["seed"])
    print(f"evaluate[{m['model']}, fold {m['provenance'].get('fold')}]: "
          f"val acc {m['val'].get('accuracy', float('nan')):.3f}, "
          f"test acc {m['test'].get('accuracy', float('nan')):.3f}")


def cmd_compare(args: argparse.Namespace, p: dict[str, Any]) -> None:
    import pandas as pd

    from soundstage import tracking
    from soundstage.compare import runs_table, split_note

    table = runs_table(tracking_uri=tracking.tracking_uri(p["mlflow"]["tracking_uri"] if p else None),
                       experiment=args.experiment, model=args.model, sort_by=args.sort, ascending=args.ascending,
                       diff_only=not args.all_params, limit=args.limit, folds=args.folds)
    if table.empty:
        print("compare: no runs recorded yet")
        return
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    note = split_note(table)
    if note:
        print(note)


def cmd_folds(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.split import fold_ids

    info = json.loads(Path(args.info).read_text(encoding="utf-8"))
    folds = fold_ids(info, refit=p["train"]["refit"] and not args.evaluated)
    print(" ".join(pattern.format(fold=fold) for fold in folds for pattern in args.patterns))


def _cmd_predict_windows(args: argparse.Namespace) -> None:
    from soundstage.bundle import load_bundle
    from soundstage.stream import predict_windows

    bundle = load_bundle(args.bundle)
    predicted = predict_windows(bundle=bundle, files=args.files, window=args.window,
                                hop=args.window if args.hop is None else args.hop, fmt=args.format,
                                events=args.events, min_confidence=args.min_confidence, timing=args.timing,
                                stdin=sys.stdin.buffer, out=sys.stdout, err=sys.stderr)
    if not predicted:
        raise SystemExit(1)


def cmd_predict(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.registry import is_model_uri, local_bundle

    if is_model_uri(args.bundle):  # runs:/... or models:/...: predict with its bundle, downloaded for this call
        from soundstage import tracking

        uri = tracking.tracking_uri((p.get("mlflow") or {}).get("tracking_uri"))
        with local_bundle(args.bundle, tracking_uri=uri) as bundle:
            return cmd_predict(argparse.Namespace(**{**vars(args), "bundle": str(bundle)}), p)
    if args.window is not None:
        return _cmd_predict_windows(args)
    windowed = {"--hop": args.hop is not None, "--events": args.events, "--timing": args.timing,
                "--min-confidence": args.min_confidence != 0.0, "--format audacity": args.format == "audacity",
                "'-' (standard input)": "-" in args.files}
    if any(windowed.values()):
        raise ValueError(f"{', '.join(k for k, v in windowed.items() if v)} needs --window SECONDS")
    from soundstage.predict import predict

    table, errors = predict(bundle_dir=args.bundle, files=args.files)
    if args.format == "json":
        print(json.dumps({"predictions": table.to_dict("records"),
                          "errors": [e.__dict__ for e in errors]}, indent=2))
    elif args.format == "csv":
        print(table.to_csv(index=False, float_format="%.6f"), end="")
    else:
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 200,
                               "display.float_format", "{:.3f}".format):
            print(table.to_string(index=False) if len(table) else "(no file predicted)")
    for e in errors:
        print(f"predict: error: {e.message}", file=sys.stderr)
    if errors and table.empty:
        raise SystemExit(1)


def cmd_serve(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.config import validate_params
    from soundstage.registry import is_model_uri, local_bundle
    from soundstage.serve import ServeLimits, serve

    if is_model_uri(args.bundle):  # runs:/... or models:/...: serve its bundle, downloaded while serving
        from soundstage import tracking

        uri = tracking.tracking_uri(((p or {}).get("mlflow") or {}).get("tracking_uri"))
        with local_bundle(args.bundle, tracking_uri=uri) as bundle:
            return cmd_serve(argparse.Namespace(**{**vars(args), "bundle": str(bundle)}), p)

    # params.yaml's serve section when the file exists (else the schema's defaults); flags override.
    settings = dict((p or validate_params({}))["serve"])
    for key in ("host", "port", "max_upload_mb", "max_seconds", "timeout_seconds", "concurrency", "queue",
                "window_seconds", "hop_seconds"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    serve(args.bundle, host=settings["host"], port=settings["port"], limits=ServeLimits.from_params(settings))


def cmd_promote(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage import tracking
    from soundstage.registry import promote

    name = args.name or (p.get("data") or {}).get("name")
    if not name:
        raise ValueError("--name is needed without a params.yaml (the registered model is data.name)")
    uri = args.tracking_uri or tracking.tracking_uri((p.get("mlflow") or {}).get("tracking_uri"))
    done = promote(name, metric=args.metric, tracking_uri=uri, alias=args.alias,
                   higher_is_better=not args.lower_is_better)
    before = "" if done.previous in (None, done.version) else f" (was version {done.previous})"
    print(f"promote: {done.name} version {done.version} ({done.model}, run {done.run_id}, {done.metric} "
          f"{done.value:.4f}) is @{done.alias}{before}: models:/{done.name}@{done.alias}")


def cmd_report(args: argparse.Namespace, p: dict[str, Any]) -> None:
    from soundstage.report import dataset_report

    path = dataset_report(ingest_dir=Path(args.ingest_dir), process_dir=Path(args.process_dir),
                          split_dir=Path(args.split_dir), features_dir=Path(args.features_dir),
                          out_dir=Path(args.out_dir), dataset=p["data"]["name"],
                          n_shards=_n_shards(p), max_rejected_share=p["data"]["max_rejected_share"],
                          seed=p["seed"], saved=p["features"]["save"])
    print(f"report: {path}")


def build_parser() -> argparse.ArgumentParser:
    from soundstage.models import MODEL_KINDS

    ap = argparse.ArgumentParser(prog="soundstage", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("--n-shards", type=int, metavar="N",
                    help="the shard count, resolved by the caller (Snakemake) for sharding.n_shards: auto")
    sub = ap.add_subparsers(dest="command", required=True, metavar="<stage>")

    s = sub.add_parser("shards", help="the shard count (sharding.n_shards resolved), or each pattern's shard files")
    s.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="a path with {} for the 3-digit shard, e.g. data/process/shards/{}.csv")
    s.set_defaults(func=cmd_shards)

    s = sub.add_parser("demo", help="synthesize the demo dataset")
    s.add_argument("--out", default="data/demo")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("ingest", help="scan the dataset and write the manifest")
    s.add_argument("--out-dir", default="data/ingest")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("process", help="decode and preprocess one shard of clips")
    s.add_argument("--shard", type=int, required=True)
    s.add_argument("--manifest", default="data/ingest/manifest.csv")
    s.add_argument("--out-dir", default="data/process")
    s.set_defaults(func=cmd_process)

    s = sub.add_parser("split", help="train/val/test split: stratified by ratios, or given by the data")
    s.add_argument("inputs", nargs="+", help="process shard tables")
    s.add_argument("--manifest", default="data/ingest/manifest.csv",
                   help="ingest manifest: the clips' metadata (split.mode column) and paths (split.mode lists)")
    s.add_argument("--out-dir", default="data/split")
    s.set_defaults(func=cmd_split)

    s = sub.add_parser("features", help="features of one shard, or (--table) the modelling table")
    s.add_argument("--index", help="process shard table (shard mode)")
    s.add_argument("--audio-dir", help="(shard mode) the processed audio stores (default: the index's "
                   "<process dir>/audio)")
    s.add_argument("--table", action="store_true", help="gather shard tables and splits into table.parquet")
    s.add_argument("--inputs", nargs="*", default=[], help="feature shard tables (--table mode)")
    s.add_argument("--ingest-dir", default="data/ingest", help="(--table mode) for the rejected share")
    s.add_argument("--process-dir", default="data/process", help="(--table mode) for the rejected share")
    s.add_argument("--out-dir", default="data/features")
    s.set_defaults(func=cmd_features)

    s = sub.add_parser("stats", help="train-split log-mel statistics from the feature shards")
    s.add_argument("inputs", nargs="+", help="feature shard tables")
    s.add_argument("--folds", default="data/split/folds.csv", help="the split's folds")
    s.add_argument("--fold", default="0", help="the fold whose train clips the statistics are over")
    s.add_argument("--logmel-dir", default="data/features/logmel")
    s.add_argument("--out-dir", default="data/stats/0")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("train", help="train one model and log it to MLflow")
    s.add_argument("--model", required=True, choices=MODEL_KINDS)
    s.add_argument("--table", default="data/features/table.parquet")
    s.add_argument("--folds", default="data/split/folds.csv", help="the split's folds")
    s.add_argument("--fold", default="0", help="the fold to train on (its train and val clips)")
    s.add_argument("--stats", default="data/stats/0/logmel.npz", help="the fold's log-mel statistics (keras_cnn)")
    s.add_argument("--logmel-dir", default="data/features/logmel")
    s.add_argument("--process-dir", default="data/process", help="processed audio (waveform augmentation)")
    s.add_argument("--manifest", default="data/ingest/manifest.csv", help="ingest manifest (hours of audio in the "
                   "MLflow dataset profile)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="score a model bundle on its fold, (--aggregate) combine a model's folds, "
                                        "or (--summary) combine the models' metrics")
    s.add_argument("--bundle")
    s.add_argument("--table", default="data/features/table.parquet")
    s.add_argument("--folds", default="data/split/folds.csv", help="the split's folds")
    s.add_argument("--fold", help="the fold to score (default: the one the bundle was trained on)")
    s.add_argument("--aggregate", action="store_true",
                   help="mean, std and per-fold values of every metric of the fold folders --inputs, into --out-dir")
    s.add_argument("--split-info", default="data/split/folds.json", help="with --aggregate: the split's folds.json")
    s.add_argument("--logmel-dir", default="data/features/logmel")
    s.add_argument("--out-dir")
    s.add_argument("--no-mlflow", action="store_true")
    s.add_argument("--summary", action="store_true")
    s.add_argument("--inputs", nargs="*", default=[],
                   help="with --summary: per-model metrics files (default: those of params.yaml's train.models); "
                        "with --aggregate: the model's fold folders (default: <out-dir>/folds/<fold> of every fold)")
    s.add_argument("--out", help="with --summary: write the combined metrics here (else only print the table)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("report", help="dataset report (class balance, durations, rejects, splits, example clips)")
    s.add_argument("--ingest-dir", default="data/ingest")
    s.add_argument("--process-dir", default="data/process")
    s.add_argument("--split-dir", default="data/split")
    s.add_argument("--features-dir", default="data/features")
    s.add_argument("--out-dir", default="reports/dataset")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("compare", help="compare MLflow runs")
    s.add_argument("--experiment", help="MLflow experiment (dataset name); default: all")
    s.add_argument("--model", help="only runs of this model")
    s.add_argument("--sort", default="val_macro_f1", help="metric to sort by (default val_macro_f1)")
    s.add_argument("--ascending", action="store_true")
    s.add_argument("--all-params", action="store_true", help="show every param, not only those that differ")
    s.add_argument("--limit", type=int)
    s.add_argument("--folds", action="store_true", help="also the runs of each fold (nested under their parent run)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("folds", help="the split's folds as paths (DVC stages ask Snakemake for these targets)")
    s.add_argument("patterns", nargs="+", help="paths with {fold}, e.g. 'models/random_forest/folds/{fold}'")
    s.add_argument("--info", default="data/split/folds.json")
    s.add_argument("--evaluated", action="store_true", help="only the evaluated folds, not the refit model's")
    s.set_defaults(func=cmd_folds)

    s = sub.add_parser("predict", help="predict labels of audio files with a model bundle")
    s.add_argument("bundle", help="model bundle folder, e.g. models/random_forest/folds/0, or an MLflow model: "
                                  "runs:/<run_id>/pipeline, models:/<name>@champion, models:/<name>/<version>")
    s.add_argument("files", nargs="+", help="audio files; with --window, '-' reads a WAV/FLAC stream from stdin")
    s.add_argument("--format", choices=["table", "csv", "json", "audacity"], default="table",
                   help="audacity (a label track) needs --window; with --window, json is JSON Lines")
    s.add_argument("--window", type=float, help="predict windows of this many seconds, each as soon as it is read")
    s.add_argument("--hop", type=float, help="seconds between window starts (default: --window)")
    s.add_argument("--events", action="store_true", help="print runs of windows with one label instead of windows")
    s.add_argument("--min-confidence", type=float, default=0.0, help="with --events: lowest window score kept")
    s.add_argument("--timing", action="store_true", help="each window's latency (ms) and p50/p99 on stderr")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("serve", help="serve a model bundle over HTTP (POST /predict, GET /health, GET /labels)",
                       description="Defaults come from params.yaml's serve section (when the file exists); "
                                   "flags override them.")
    s.add_argument("bundle", help="model bundle folder, e.g. models/random_forest/folds/0")
    s.add_argument("--host", help="address to bind (serve.host: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, help="TCP port (serve.port: 8000)")
    s.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, metavar="MB",
                   help="largest upload in MiB (413 beyond)")
    s.add_argument("--max-seconds", dest="max_seconds", type=float, metavar="S",
                   help="longest audio in seconds (413 beyond)")
    s.add_argument("--timeout", dest="timeout_seconds", type=float, metavar="S",
                   help="seconds to answer a request (504 beyond)")
    s.add_argument("--concurrency", type=int, metavar="N", help="predictions computed at once")
    s.add_argument("--queue", type=int, metavar="N",
                   help="requests that may wait for a slot (503 with Retry-After beyond)")
    s.add_argument("--window", dest="window_seconds", type=float, metavar="S",
                   help="window length in seconds of the per-window labels of longer uploads")
    s.add_argument("--hop", dest="hop_seconds", type=float, metavar="S", help="hop between windows in seconds")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("promote", help="point the registered model's alias 'champion' at its best version")
    s.add_argument("--name", help="registered model (default: params.yaml's data.name, the experiment)")
    s.add_argument("--metric", default="val_macro_f1", help="run metric to choose by (default val_macro_f1)")
    s.add_argument("--lower-is-better", action="store_true", help="the metric is a loss")
    s.add_argument("--alias", default="champion")
    s.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, params.yaml, ./mlflow.db)")
    s.set_defaults(func=cmd_promote)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    needs_params = args.command not in {"predict", "serve", "promote"}
    try:
        params = load_params(args.params) if needs_params or Path(args.params).is_file() else {}
    except ParamsError as exc:
        if args.command == "compare" and not Path(args.params).is_file():
            params = {}
        else:
            print(f"soundstage: {exc}", file=sys.stderr)
            return 2
    if args.n_shards is not None:
        if not 1 <= args.n_shards <= 1000:
            print(f"soundstage: --n-shards {args.n_shards}: must be 1..1000", file=sys.stderr)
            return 2
        if params:
            params["sharding"]["n_shards"] = args.n_shards
    try:
        args.func(args, params)
    except (ParamsError, ValueError, OSError) as exc:  # OSError: a full disk, a missing or unreadable file
        print(f"soundstage {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
