# Helpers shared by the rules: validated params, shard/model lists, input functions, the run guard.
import json
import os
import sys
from pathlib import Path

from soundstage import runlock, split, stages
from soundstage.models import MODEL_KINDS
from soundstage.config import augment_params, load_params
from soundstage.ingest import (
    DEMO_ROOT,
    fingerprint_tree,
    inherited_n_shards,
    is_demo as params_are_demo,
    pass_on_n_shards,
    resolve_n_shards,
    scan_tree,
)

PARAMS = workflow.configfiles[-1] if workflow.configfiles else "params.yaml"

# Validate params.yaml against workflow/schemas/params.schema.yaml (+ cross-key checks) and fill
# defaults; a bad file stops here, before any job, with a message naming the key. Every job's CLI reads
# that same file (not Snakemake's `config`); pass_on lets it skip validating again while it is unchanged.
config.update(load_params(PARAMS, pass_on=True))
# --use-conda builds this environment for every rule (the same one `make run` installs with pip).
ENV = "../../environment.yml"
# The user's data is walked once, for its fingerprint (get_data_fingerprint) and, with `n_shards: auto`,
# the shard count, which the jobs are then told (--n-shards). Jobs that Snakemake runs in processes of
# their own (a cluster's) inherit the count rather than walk the data again.
_SCAN = []


def data_scan():
    if not _SCAN:
        root = config["data"]["root"]
        missing = params_are_demo(config) or not os.path.exists(root)
        _SCAN.append(None if missing else scan_tree(root, config["data"]["extensions"]))
    return _SCAN[0]


N_SHARDS = None if workflow.is_main_process else inherited_n_shards()
if N_SHARDS is None:
    N_SHARDS = resolve_n_shards(config, None if config["sharding"]["n_shards"] != "auto" else data_scan())
pass_on_n_shards(N_SHARDS)
config["sharding"]["n_shards"] = N_SHARDS  # the rules' watched params: a new count re-runs the sharded stages
SHARDS = [f"{i:03d}" for i in range(N_SHARDS)]
MODELS = config["train"]["models"]
UNDER_DVC = os.environ.get("SOUNDSTAGE_UNDER_DVC") == "1"

# One run at a time, and a dead run's leftovers (Snakemake's locks, incomplete outputs, temporary
# files) cleared, before the DAG is built or anything deleted; see soundstage.runlock. Jobs that
# Snakemake runs in other processes (cluster jobs) re-read this file: only the main process guards.
GUARD = None
if workflow.is_main_process:
    try:
        GUARD = runlock.guard(
            ".", read_only=runlock.read_only_invocation(), take_dvc_lock=not UNDER_DVC, under_dvc=UNDER_DVC
        )
    except runlock.RunBusy as exc:
        sys.exit(f"soundstage: {exc}")
    if GUARD.recovered and any(GUARD.recovered.values()):
        found = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in GUARD.recovered.items() if n)
        print(f"soundstage: cleared what a killed run left behind ({found})", file=sys.stderr)


wildcard_constraints:
    shard=r"\d{3}",
    model="|".join(MODEL_KINDS),
    fold=r"\d+|all",


# The code and params each stage reads (soundstage.stages, also behind dvc.yaml's deps and params):
# code files are rule inputs, params values rule params, so that a change to either re-runs it.
CODE = {stage: stages.code_files(stage) for stage in stages.STAGES}


def stage_params(stage, rule=None):
    return stages.param_values(config, stage, rule=rule or stage)


def get_train_params(wildcards):
    return stages.param_values(config, "train", model=wildcards.model)


def is_demo():
    return params_are_demo(config)


def get_ingest_input(wildcards):
    """The demo folder is built by a rule; a user's dataset is outside the DAG (see fingerprint)."""
    return {"data": [DEMO_ROOT] if is_demo() else [], "code": CODE["ingest"]}


def get_data_fingerprint(wildcards):
    """Hash of the user's audio files (path, size, mtime): a changed dataset re-runs ingest, since a
    folder's own mtime misses changes in nested folders."""
    if is_demo():
        return "demo"
    data = config["data"]
    csv = [data["csv"]["path"]] if data["layout"] == "csv" else []
    scan = data_scan()
    return [scan.fingerprint if scan else "missing"] + [
        fingerprint_tree(r, data["extensions"]) if os.path.exists(r) else "missing" for r in csv
    ]


def get_split_input(wildcards):
    """The shards and the manifest (metadata and paths of the clips), and in lists mode the list
    files, so that editing a list re-runs the split."""
    inputs = {
        "shards": expand("data/process/shards/{shard}.csv", shard=SHARDS),
        "manifest": "data/ingest/manifest.csv",
        "code": CODE["split"],
    }
    if config["split"]["mode"] == "lists":
        lists = config["split"]["lists"]
        inputs["lists"] = [lists[name] for name in ("train", "val", "test") if lists[name]] + (lists["folds"] or [])
    return inputs


def fold_ids(refit=False):
    """The folds the split wrote (data/split/folds.json), and "all" (every assigned clip, for the
    final model) when `refit` and cross-validating; the checkpoint runs the split first. Under DVC
    the split stage ran before, and a checkpoint outside --allowed-rules never counts as done."""
    info = "data/split/folds.json" if UNDER_DVC else checkpoints.split.get().output.info
    with open(info, encoding="utf-8") as fh:
        return split.fold_ids(json.load(fh), refit=refit)


def get_train_inputs(wildcards):
    inputs = {
        "table": "data/features/table.parquet",
        "folds": "data/split/folds.csv",
        "manifest": "data/ingest/manifest.csv",  # the MLflow dataset profile's hours
        "code": CODE["train"],
    }
    if wildcards.model == "keras_cnn":
        inputs["stats"] = f"data/stats/{wildcards.fold}/logmel.npz"
        inputs["shards"] = expand("data/features/shards/{shard}.parquet", shard=SHARDS)
    if augment_params(config, wildcards.model):  # augmentation reads the processed audio
        inputs["processed"] = expand("data/process/shards/{shard}.csv", shard=SHARDS)
    return inputs


def get_evaluate_inputs(wildcards):
    inputs = {
        "bundle": f"models/{wildcards.model}/folds/{wildcards.fold}",
        "table": "data/features/table.parquet",
        "folds": "data/split/folds.csv",
        "code": CODE["evaluate"],
    }
    if wildcards.model == "keras_cnn":
        inputs["shards"] = expand("data/features/shards/{shard}.parquet", shard=SHARDS)
    return inputs


def get_aggregate_inputs(wildcards):
    """Every evaluated fold of the model (not the refit model: it has no test clips)."""
    return {
        "metrics": expand("reports/evaluate/{model}/folds/{fold}/metrics.json", model=wildcards.model, fold=fold_ids()),
        "info": "data/split/folds.json",
        "code": CODE["evaluate"],
    }


def get_final_outputs(wildcards):
    """Every output of every rule: a missing one (removed after its job failed, or by hand) is
    re-made, and whatever depends on it after it, even when the later results still exist."""
    outputs = [
        rules.ingest.output,
        rules.split.output,
        rules.features_table.output,
        rules.metrics.output,
        rules.report.output,
    ] + ([rules.demo.output] if is_demo() else [])
    for shard in SHARDS:
        outputs += [expand(rules.process.output, shard=shard), expand(rules.features.output, shard=shard)]
    folds, trained = fold_ids(), fold_ids(refit=config["train"]["refit"])
    outputs += [expand(rules.stats.output, fold=fold) for fold in trained]
    for model in MODELS:
        outputs += [expand(rules.train.output, model=model, fold=fold) for fold in trained]
        outputs += [expand(rules.evaluate.output, model=model, fold=fold) for fold in folds]
        outputs += [expand(rules.aggregate.output, model=model)]
    return [str(f) for group in outputs for f in group]


def cli(command):
    """The shell command of a rule: `command`'s output goes to the rule's log, its errors and
    warnings to the log and the terminal (which still shows them when a full disk keeps the log empty)."""
    return f": > {{log}}; {command} 2>&1 >> {{log}} | tee -a {{log}} >&2"


def print_rejections():
    """The run's rejected files by reason, and classes with very few clips, on the terminal."""
    from soundstage.io import read_csv
    from soundstage.rejections import format_summary, summarize_run
    from soundstage.report import small_class_warning

    dirs = {f"{stage}_dir": f"data/{stage}" for stage in ("ingest", "process", "features")}
    print(f"soundstage: {format_summary(summarize_run(**dirs, n_shards=len(SHARDS)))}", file=sys.stderr)
    warning = small_class_warning(read_csv("data/ingest/manifest.csv")["label"])
    if warning:
        print(f"soundstage: {warning}", file=sys.stderr)
    # The split's warnings (classes missing from a split, clips in no split), repeated at the end.
    split_log = Path("logs/split.log")
    if split_log.is_file():
        for line in split_log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("split: WARNING"):
                print(f"soundstage: {line}", file=sys.stderr)


def on_success():
    """At the end of a run that gathered the features: :func:`print_rejections`. After a plain
    `snakemake` run of the whole pipeline, record it in dvc.lock (`dvc commit --no-relink`, no
    workspace file touched, DVC's lock held throughout), so that `dvc status` is clean and `dvc
    repro` has nothing to redo. Not while DVC runs the stage (it records the stage itself), not
    for a partial run (stages left out may be stale), not outside a DVC repository."""
    ran = {job.rule.name for job in workflow.dag.jobs}
    if ran & {"features_table", "all"}:
        print_rejections()
    if UNDER_DVC or GUARD is None or GUARD.dvc_lock is None:
        return
    if "all" not in ran:
        print(
            "soundstage: a partial run: dvc.lock is left as it was (`dvc status` shows what changed)", file=sys.stderr
        )
        return
    try:
        runlock.dvc_commit(".", skip_stages=[] if is_demo() else ["demo"], held=GUARD)
    except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say why DVC did not record it
        print(
            f"soundstage: the run succeeded, but DVC could not record it in dvc.lock: {exc}\n"
            "Run `dvc commit --force --no-relink` once the cause is fixed.",
            file=sys.stderr,
        )
