"""Fault injection, end to end: runs killed with SIGKILL at several points of process, features and
train, a parameter change and back across kills, a disk that fills up during training, and two
invocations at once. After each fault the same command is simply run again, and every output is
compared bit for bit with an uninterrupted run on the same data.

The dataset is generated outside the project (regex layout, as a user's recordings), with enough
clips that a stage takes a few seconds, so that the kills land in the middle of a stage (each test
checks that they did).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import make_project, output_digests, project_env, run, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("faults")]

SNAKEMAKE = ["snakemake", "--workflow-profile", "workflow/profiles/default", "--cores", "2"]
PLAIN = ["snakemake", "--cores", "2"]  # the bare command: no profile, so no --rerun-incomplete
N_CLIPS = 1200
SPEAKERS = ["ann", "bob", "cat", "dan", "eve", "fay"]


def make_digits(root: Path, n: int, *, seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> Path:
    """``n`` clips named ``<digit>_<speaker>_<take>.wav`` (free-spoken-digit style): a tone per digit,
    shifted per speaker, with noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        digit, speaker, take = i % 10, SPEAKERS[(i // 10) % len(SPEAKERS)], i // (10 * len(SPEAKERS))
        t = np.arange(int(sr * seconds * rng.uniform(0.7, 1.3))) / sr
        f0 = 180 + 70 * digit + 6 * SPEAKERS.index(speaker)
        y = (0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 2.5 * f0 * t)
             + 0.03 * rng.standard_normal(t.size))
        sf.write(root / f"{digit}_{speaker}_{take}.wav", y.astype(np.float32), sr, subtype="PCM_16")
    return root


def digits_params(data: Path, **overrides) -> dict:
    params = tiny_params(**overrides)
    params["data"].update(name="digits", root=str(data), layout="regex")
    params["data"]["regex"]["pattern"] = r"(?P<label>\d)_(?P<group>[a-z]+)_\d+\.wav"
    params["train"]["models"] = ["random_forest"]
    params["features"]["n_mels"] = 128
    return params


def digits_project(dest: Path, data: Path, **overrides) -> Path:
    """A fresh clone pointed at ``data``, with the demo stage removed from dvc.yaml as the README says."""
    root = make_project(dest, digits_params(data, **overrides))
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    del dvc["stages"]["demo"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    run(["git", "commit", "-qam", "own data"], root)
    return root


def set_param(root: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=project_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended before {what}:\n{out[-3000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def newer(path: Path, t0: float) -> bool:
    try:
        return path.stat().st_mtime > t0
    except FileNotFoundError:  # Snakemake removes a job's log before it runs
        return False


def kill_group(proc: subprocess.Popen) -> None:
    """``kill -9`` of the Snakemake process group: Snakemake and every job it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode is None:
        proc.communicate()


def part_bytes(root: Path, kind: str, newer_than: float) -> int:
    """Bytes a stage's jobs have appended to their part stores of ``kind`` (``data/process/audio``,
    ``data/features/logmel``; being written or closed) since ``newer_than``: their progress through
    the shards' clips."""
    n = 0
    for dirpath, _, names in os.walk(root / kind / "parts"):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(os.path.join(dirpath, name))
                n += st.st_size if st.st_mtime > newer_than else 0
    return n


def kill_in(root: Path, cmd: list[str], kind: str, share: float, total: int) -> None:
    """Start ``cmd``, SIGKILL its process group once the jobs writing ``kind`` have computed about
    ``share`` of the clips (``total``: the bytes of an uninterrupted run's stores of ``kind``), and
    check that they were indeed unfinished then."""
    t0 = time.time()
    proc = start(cmd, root)
    wait_for(lambda: part_bytes(root, kind, t0) >= share * total, proc, f"{share:.0%} of {kind} computed")
    kill_group(proc)
    written = part_bytes(root, kind, t0)
    assert written < total, f"the kill came too late: {written} of {total} bytes of {kind} already computed"


def kill_in_features(root: Path, cmd: list[str], share: float, total: int) -> None:
    """:func:`kill_in` the features jobs' log-mels."""
    kill_in(root, cmd, "data/features/logmel", share, total)


def kill_in_train(root: Path, cmd: list[str]) -> None:
    """SIGKILL the run while its training job runs (the job's log was just (re)created)."""
    log = root / "logs" / "train" / "random_forest" / "0.log"
    t0 = time.time()
    proc = start(cmd, root)
    wait_for(lambda: newer(log, t0), proc, "the training job to start")
    kill_group(proc)
    bundle = root / "models" / "random_forest" / "folds" / "0" / "bundle.json"
    assert not bundle.exists() or bundle.stat().st_mtime < t0


def assert_same_outputs(root: Path, clean: dict[str, str]) -> None:
    got = output_digests(root)
    assert sorted(got) == sorted(clean), set(got) ^ set(clean)
    differ = [k for k in clean if got[k] != clean[k]]
    assert not differ, f"{len(differ)} outputs differ from an uninterrupted run, e.g. {differ[:5]}"
    temps = [p for p in root.rglob("*.tmp-*") if ".snakemake" not in p.parts and ".dvc" not in p.parts]
    assert not temps, f"temporary files of killed writers survived: {temps[:5]}"


def nothing_to_do(root: Path) -> None:
    """A strict second look: every file judged by its modification time alone."""
    dry = run([*SNAKEMAKE, "-n", "--max-checksum-file-size", "0"], root)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_digits(tmp_path_factory.mktemp("recordings") / "digits", N_CLIPS)


@pytest.fixture(scope="module")
def clean_project(tmp_path_factory, data: Path) -> Path:
    """An uninterrupted run, at n_mels 128."""
    root = digits_project(tmp_path_factory.mktemp("clean") / "soundstage", data)
    run(SNAKEMAKE, root)
    nothing_to_do(root)
    return root


@pytest.fixture(scope="module")
def clean(clean_project: Path) -> dict[str, str]:
    """The outputs of the uninterrupted run."""
    return output_digests(clean_project)


@pytest.fixture(scope="module")
def logmel_bytes(clean_project: Path) -> int:
    """Bytes of the uninterrupted run's log-mel stores: what the features jobs compute in all."""
    return sum(p.stat().st_size for p in (clean_project / "data/features/logmel").glob("*.npy"))


@pytest.fixture(scope="module")
def audio_bytes(clean_project: Path) -> int:
    """Bytes of the uninterrupted run's processed audio stores: what the process jobs write in all."""
    return sum(p.stat().st_size for p in (clean_project / "data/process/audio").glob("*.npy"))


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, data: Path) -> Path:
    """A project whose models/ lives on a 64 MB tmpfs where the machine allows mounting one (root),
    so that its disk can be filled up later."""
    root = digits_project(tmp_path_factory.mktemp("faulty") / "soundstage", data)
    (root / "models").mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root / "models")],
                             capture_output=True).returncode == 0
    (root / ".mounted").write_text("yes" if mounted else "")
    yield root
    if mounted:
        subprocess.run(["umount", "-l", str(root / "models")], check=False)


def test_killed_anywhere_then_simply_run_again(faulty: Path, clean: dict[str, str], logmel_bytes: int,
                                              audio_bytes: int):
    """SIGKILL in process, in features (then the bare command, without the profile's
    --rerun-incomplete) and in train: the same command finishes the run, no --unlock needed, and
    the outputs are those of an uninterrupted run, with no temporary file left."""
    kill_in(faulty, SNAKEMAKE, "data/process/audio", 1 / 3, audio_bytes)
    kill_in_features(faulty, PLAIN, 1 / 2, logmel_bytes)
    assert list((faulty / ".snakemake" / "locks").iterdir()), "a SIGKILLed Snakemake leaves its locks"
    kill_in_train(faulty, SNAKEMAKE)
    done = run(PLAIN, faulty)
    assert "LockException" not in done.stderr and "IncompleteFilesException" not in done.stderr
    assert "cleared what a killed run left behind" in done.stderr
    assert_same_outputs(faulty, clean)
    nothing_to_do(faulty)
    assert "up to date" in run(["dvc", "status"], faulty).stdout


def test_a_param_change_and_back_across_kills(faulty: Path, clean: dict[str, str], logmel_bytes: int):
    """n_mels 128 -> 64, killed twice mid-features (early, then later), -> 128 again: no 64-bin
    log-mel survives in the 128-bin pipeline; every output equals the uninterrupted 128 run."""
    set_param(faulty, "features", "n_mels", 64)
    kill_in_features(faulty, SNAKEMAKE, 1 / 8, logmel_bytes // 2)  # at 64 mels: half the bytes
    kill_in_features(faulty, SNAKEMAKE, 2 / 3, logmel_bytes // 2)
    set_param(faulty, "features", "n_mels", 128)
    run(SNAKEMAKE, faulty)
    shapes = {np.load(p, mmap_mode="r").shape[1] for p in (faulty / "data/features/logmel").rglob("*.npy")}
    assert shapes == {128}
    assert_same_outputs(faulty, clean)


def test_outputs_respect_the_umask(faulty: Path):
    """Shared project folders: no output is private to its writer (mkstemp's 0600 used to leak)."""
    private = [p for top in ("data", "models", "reports") for p in (faulty / top).rglob("*")
               if p.is_file() and p.stat().st_mode & 0o044 != 0o044]
    assert not private, private[:5]


def test_a_failed_training_is_redone_and_its_metrics_never_pass_for_current(faulty: Path):
    """The disk fills up while `train` writes the model (n_estimators changed); once space is freed
    the next run retrains, and meanwhile the old metrics are refused as describing other params."""
    if not (faulty / ".mounted").read_text():
        pytest.skip("mounting a tmpfs needs root")
    import mlflow

    set_param(faulty, "random_forest", "n_estimators", 33)
    # What Snakemake removes before the job runs; then the disk fills up.
    shutil.rmtree(faulty / "models" / "random_forest")
    filler = faulty / "models" / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"], capture_output=True)
    failed = run(SNAKEMAKE, faulty, check=False)
    assert failed.returncode != 0
    assert "No space left on device" in failed.stderr  # on the terminal, whatever the log could hold
    stale = run(["soundstage", "evaluate", "--summary"], faulty, check=False)
    assert stale.returncode != 0 and "other parameters" in stale.stderr
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{faulty / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits")
    last = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert last.info.status == "FAILED" and last.data.params["random_forest.n_estimators"] == "33"

    filler.unlink()
    again = run(SNAKEMAKE, faulty)
    assert "Nothing to be done" not in again.stdout + again.stderr
    bundle = json.loads((faulty / "models/random_forest/folds/0/bundle.json").read_text())
    assert bundle["params"]["n_estimators"] == 33
    summary = run(["soundstage", "evaluate", "--summary"], faulty)
    assert "random_forest" in summary.stdout
    nothing_to_do(faulty)


def test_two_invocations_at_once(faulty: Path, clean: dict[str, str]):
    """While `snakemake` runs, a second `snakemake` and a `dvc repro` stop before touching anything;
    while `dvc repro` runs, `snakemake` stops. The runs that were let through finish as usual."""
    set_param(faulty, "random_forest", "n_estimators", 60)  # back to the clean run's params
    ingest = faulty / "data" / "ingest" / "manifest.csv"
    log = faulty / "logs" / "process" / "000.log"
    t0 = time.time()
    first = start([*SNAKEMAKE, "--forcerun", "process"], faulty)
    try:
        wait_for(lambda: newer(log, t0), first, "process to start")
        second = run(SNAKEMAKE, faulty, check=False)
        assert second.returncode != 0 and "another run is working" in second.stderr, second.stderr
        dvc = run(["dvc", "repro"], faulty, check=False)
        assert dvc.returncode != 0 and "Unable to acquire lock" in dvc.stdout + dvc.stderr
        assert ingest.is_file()  # DVC deleted nothing
        out, err = first.communicate(timeout=900)
        assert first.returncode == 0, err[-3000:]
    finally:
        kill_group(first)
    assert_same_outputs(faulty, clean)

    t0 = time.time()
    repro = start(["dvc", "repro", "--force"], faulty)
    try:
        wait_for(lambda: newer(log, t0), repro, "dvc repro's Snakemake to run")
        meanwhile = run(SNAKEMAKE, faulty, check=False)
        assert meanwhile.returncode != 0 and "DVC is running" in meanwhile.stderr, meanwhile.stderr
        out, err = repro.communicate(timeout=900)
        assert repro.returncode == 0, out[-3000:] + err[-3000:]
    finally:
        kill_group(repro)
    run(SNAKEMAKE, faulty)
    assert_same_outputs(faulty, clean)


def test_a_failed_dvc_commit_shows_dvcs_error(faulty: Path):
    """The run succeeded but DVC cannot record it (here: a stage of the user's own whose output does
    not exist): DVC's own error reaches the terminal."""
    dvc = yaml.safe_load((faulty / "dvc.yaml").read_text())
    dvc["stages"]["extra"] = {"cmd": "true", "outs": ["data/extra"]}
    (faulty / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    done = run([*SNAKEMAKE, "--forcerun", "metrics"], faulty)
    assert "DVC could not record it" in done.stderr and "data/extra' does not exist" in done.stderr
