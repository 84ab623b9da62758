# Helpers shared by the rules: validated params, shard/model lists, input functions.
import os
import shutil
import subprocess
from pathlib import Path

from soundstage.config import load_params
from soundstage.ingest import fingerprint_tree


PARAMS = workflow.configfiles[-1] if workflow.configfiles else "params.yaml"

# Validate params.yaml against workflow/schemas/params.schema.yaml (+ cross-key checks) and fill
# defaults; a bad file stops here, before any job, with a message naming the key. The file is read
# again (not Snakemake's `config`) because every job's CLI reads that same file.
config.update(load_params(PARAMS))
# --use-conda builds this environment for every rule (the same one `make run` installs with pip).
ENV = "../../environment.yml"
SHARDS = [f"{i:03d}" for i in range(config["sharding"]["n_shards"])]
MODELS = config["train"]["models"]
DEMO_ROOT = "data/demo"
UNDER_DVC = os.environ.get("SOUNDSTAGE_UNDER_DVC") == "1"


wildcard_constraints:
    shard=r"\d{3}",
    model="|".join(["random_forest", "keras_mlp", "keras_cnn"]),


# The modules each stage runs: inputs of its rules (as the scripts are deps in dvc.yaml), so that
# editing a stage's code re-runs it. Per-clip caches also key on this code.
CODE = {
    "demo": ["src/soundstage/demo.py"],
    "ingest": ["src/soundstage/ingest.py"],
    "process": ["src/soundstage/process.py", "src/soundstage/audio.py"],
    "split": ["src/soundstage/split.py"],
    "features": ["src/soundstage/features.py", "src/soundstage/features_core.py"],
    "stats": ["src/soundstage/stats.py", "src/soundstage/moments.py"],
    "train": ["src/soundstage/train.py", "src/soundstage/models.py", "src/soundstage/bundle.py"],
    "evaluate": ["src/soundstage/evaluate.py"],
    "report": ["src/soundstage/report.py"],
}


def is_demo():
    return os.path.normpath(config["data"]["root"]) == DEMO_ROOT and config["data"]["layout"] == "folder"


def get_ingest_input(wildcards):
    """The demo folder is built by a rule; a user's dataset is outside the DAG (see fingerprint)."""
    return {"data": [DEMO_ROOT] if is_demo() else [], "code": CODE["ingest"]}


def get_data_fingerprint(wildcards):
    """Hash of the user's audio files (path, size, mtime): a changed dataset re-runs ingest, since a
    folder's own mtime misses changes in nested folders."""
    if is_demo():
        return "demo"
    data = config["data"]
    roots = [data["root"]] + ([data["csv"]["path"]] if data["layout"] == "csv" else [])
    return [fingerprint_tree(r, data["extensions"]) if os.path.exists(r) else "missing" for r in roots]


def get_model_params(wildcards):
    return config[wildcards.model]


def get_train_inputs(wildcards):
    inputs = {"table": "data/features/table.parquet", "code": CODE["train"]}
    if wildcards.model == "keras_cnn":
        inputs["stats"] = "data/stats/logmel.npz"
        inputs["shards"] = expand("data/features/shards/{shard}.parquet", shard=SHARDS)
    return inputs


def get_evaluate_inputs(wildcards):
    inputs = {"bundle": f"models/{wildcards.model}", "table": "data/features/table.parquet", "code": CODE["evaluate"]}
    if wildcards.model == "keras_cnn":
        inputs["shards"] = expand("data/features/shards/{shard}.parquet", shard=SHARDS)
    return inputs


def get_final_outputs():
    return ["reports/metrics.json", "reports/dataset/report.md", "data/stats/logmel.npz"]


def dvc_commit():
    """After a plain `snakemake` run, record the new state in dvc.lock so that `dvc status` is clean
    and `dvc repro` has nothing to redo (DVC keeps hashes, not mtimes). Skipped while DVC itself runs
    a stage (it holds the lock) and where the project is not a DVC repository."""
    if UNDER_DVC or not Path(".dvc").is_dir() or shutil.which("dvc") is None:
        return
    result = subprocess.run(["dvc", "commit", "--force", "--quiet"], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"soundstage: `dvc commit` failed; run it by hand to record this run in dvc.lock:\n{result.stderr}")
