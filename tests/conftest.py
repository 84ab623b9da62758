"""Shared fixtures: a seeded rng, the files a stage reads ahead, and throw-away copies of the project
for end-to-end runs."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

os.environ.setdefault("KERAS_BACKEND", "jax")
# A private, fresh numba cache per test process (inherited by the pipelines the tests start).
# numba's on-disk cache is not safe under concurrent writers: two xdist workers JIT-compiling the
# same librosa function into one cache left an entry that segfaults every later load (seen in CI,
# reproduced with that cache directory). A fresh directory per process also keeps runs independent.
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="soundstage-numba-")
atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)

@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def advised(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Real paths asked to be read ahead (``posix_fadvise(POSIX_FADV_WILLNEED)``), in order (the
    advice is still given); ``advised.lengths``: the bytes asked for each (0: the whole file)."""
    if not hasattr(os, "posix_fadvise") or not Path("/proc/self/fd").is_dir():
        pytest.skip("needs posix_fadvise and /proc/self/fd")
    calls = _Advised()
    real = os.posix_fadvise

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        assert (offset, advice) == (0, os.POSIX_FADV_WILLNEED)  # from the start, read-ahead only
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        calls.lengths.append(length)
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", record)
    return calls


class _Advised(list):
    def __init__(self) -> None:
        super().__init__()
        self.lengths: list[int] = []


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the repository (what a clone would hold)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    # Results of a local run that git may keep (metrics files) are not the project's: leave them out.
    return [f for f in out.split("\0") if f and (REPO / f).is_file() and not f.startswith(("reports/", "data/"))
            or f == "data/README.md"]


def tiny_params(**overrides) -> dict:
    """The repository's params.yaml shrunk to a demo that runs end to end in about a minute."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["demo"].update(n_classes=6, clips_per_class=6, n_artists=3, duration=2.0, sample_rate=16000)
    params["process"]["sample_rate"] = 16000
    params["sharding"]["n_shards"] = 2
    params["features"].update(n_fft=1024, hop_length=256, n_mels=64)
    params["random_forest"]["n_estimators"] = 60
    params["keras_mlp"].update(epochs=40, patience=8, hidden=[64, 32])
    params["train"]["models"] = ["random_forest", "keras_mlp"]  # the CNN has its own tests (test_predict)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            params[section][name] = value
        else:
            params[section] = value
    return params


def make_project(dest: Path, params: dict) -> Path:
    """Copy the project into ``dest`` as a fresh git repository (what `git clone` gives a user)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in project_files():
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, target, follow_symlinks=False)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "dvc.lock").unlink(missing_ok=True)
    env = project_env()
    for cmd in (["git", "init", "-q"], ["git", "config", "user.name", "soundstage tests"],
                ["git", "config", "user.email", "tests@soundstage.invalid"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "fresh clone"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


def project_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SNAKEMAKE_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               KERAS_BACKEND="jax", DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return env


def run(cmd: list[str], cwd: Path, *, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def output_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every output a run leaves, by path (what must be the same bytes after a killed run is
    run again, or on a cluster as on this machine); the per-shard caches (bookkeeping that holds
    file modification times) and the bytes of model files (zip archives stamped with the time of
    writing; the models are compared through their predictions) are left out, as are the MLflow
    run ids recorded in bundle.json and metrics.json (a fold's and the aggregate's)."""
    found = {}
    for top in ("data", "reports", "models"):
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or "/cache/" in rel or path.suffix in (".skops", ".keras"):
                continue
            data = path.read_bytes()
            if path.name in ("bundle.json", "metrics.json") and top != "data":
                meta = json.loads(data)
                for key in ("mlflow", "tags"):
                    meta.pop(key, None)
                for key in ("bundle", "bundles"):  # one fold's run, or every fold's (the aggregate)
                    meta.get("provenance", {}).pop(key, None)
                data = json.dumps(meta, sort_keys=True).encode()
            found[rel] = hashlib.sha256(data).hexdigest()
    return found
