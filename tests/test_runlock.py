"""soundstage.runlock: one run at a time, a dead run's leftovers cleared, DVC recording without rewrites."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
from conftest import project_env

from soundstage import runlock
from soundstage.io import atomic_path

pytestmark = pytest.mark.integration  # DVC and child processes

def hold_in_child(project: Path, *, dvc: bool = False, both: bool = False) -> subprocess.Popen:
    """A process that takes the run lock (with ``both``, DVC's too, as a plain Snakemake does; with
    ``dvc``, DVC's own lock only, as `dvc repro` does) and sleeps."""
    code = ("from soundstage import runlock; import sys, time; g = runlock.guard(sys.argv[1], read_only=False, "
            f"take_dvc_lock={both}); print('held', flush=True); time.sleep(120)")
    if dvc:
        code = ("from dvc.lock import make_lock; import sys, time; tmp = sys.argv[1] + '/.dvc/tmp'; "
                "l = make_lock(tmp + '/lock', tmp_dir=tmp); l.lock(); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(project)], stdout=subprocess.PIPE, text=True,
                            env=project_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def leftovers(project: Path) -> dict[str, Path]:
    """What a run killed by SIGKILL leaves: Snakemake's locks and incomplete markers, a half-written
    output of a running job (file and folder), and temporary files of killed writers."""
    snake = project / ".snakemake"
    (snake / "locks").mkdir(parents=True)
    (snake / "locks" / "0.input.lock").write_text("data/ingest/manifest.csv\n")
    (snake / "locks" / "0.output.lock").write_text("models/random_forest\n")
    half = project / "data" / "features" / "shards" / "001.parquet"
    half.parent.mkdir(parents=True)
    half.write_bytes(b"PAR1 half")
    model = project / "models" / "random_forest"
    model.mkdir(parents=True)
    (model / "bundle.json").write_text("{")
    for output in ("data/features/shards/001.parquet", "models/random_forest"):
        encoded = urlsafe_b64encode(output.encode()).decode()
        (snake / "incomplete").mkdir(exist_ok=True)
        (snake / "incomplete" / encoded).write_text('{"external_jobid": null}')
    temp = project / "data" / "process" / "audio" / f".000.npy{'.tmp-'}4242"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"\x93NUMPY")
    kept = project / "data" / "process" / "audio" / "000.npy"
    kept.write_bytes(b"\x93NUMPY whole")
    with atomic_path(project / "reports" / "metrics.json") as tmp:
        tmp.write_text("{}")
        left = tmp.with_name(tmp.name + "-copy")  # a second temp name of the same form, never renamed
        left.write_text("{")
    return {"half": half, "model": model, "temp": temp, "kept": kept, "left": left}


def test_guard_clears_what_a_dead_run_left_behind(tmp_path: Path):
    things = leftovers(tmp_path)
    g = runlock.guard(tmp_path, read_only=False, take_dvc_lock=False)
    assert g.recovered == {"locks": 2, "incomplete": 2, "temp_files": 2}
    assert not list((tmp_path / ".snakemake" / "locks").iterdir())
    assert not list((tmp_path / ".snakemake" / "incomplete").iterdir())
    assert not things["half"].exists() and not things["model"].exists()
    assert not things["temp"].exists() and not things["left"].exists()
    assert things["kept"].read_bytes() == b"\x93NUMPY whole" and (tmp_path / "reports" / "metrics.json").is_file()
    g.run_lock.close()


def test_a_live_run_stops_the_second_one_before_it_touches_anything(tmp_path: Path):
    holder = hold_in_child(tmp_path)
    try:
        things = leftovers(tmp_path)  # the live run's own locks and files in progress
        busy = rf"another run is working .*snakemake, pid {holder.pid} on .*wait for that one"
        with pytest.raises(runlock.RunBusy, match=busy):
            runlock.guard(tmp_path, read_only=False, take_dvc_lock=False)
        # A dry run is let through, and recovers nothing while the other run lives.
        g = runlock.guard(tmp_path, read_only=True, take_dvc_lock=False)
        assert g.run_lock is None and g.recovered == {}
        assert things["half"].exists() and things["temp"].exists()
        assert len(list((tmp_path / ".snakemake" / "locks").iterdir())) == 2
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL releases the run lock with the process: the next run goes on and cleans up.
    g = runlock.guard(tmp_path, read_only=False, take_dvc_lock=False)
    assert g.recovered["locks"] == 2 and not things["half"].exists()
    g.run_lock.close()


def test_a_run_holds_dvcs_lock_and_stops_when_dvc_holds_it(tmp_path: Path):
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    dvc = hold_in_child(tmp_path, dvc=True)
    try:
        with pytest.raises(runlock.RunBusy, match=rf"DVC is running .*pid {dvc.pid}"):
            runlock.guard(tmp_path, read_only=False, take_dvc_lock=True)
        # The run lock was let go again: without DVC's lock (as inside `dvc repro`) a run may start.
        runlock.guard(tmp_path, read_only=False, take_dvc_lock=False).run_lock.close()
    finally:
        dvc.send_signal(signal.SIGKILL)
        dvc.wait()
    g = runlock.guard(tmp_path, read_only=False, take_dvc_lock=True)
    assert g.dvc_lock is not None
    probe = subprocess.run([sys.executable, "-c", "from dvc.lock import make_lock; import sys; t = sys.argv[1]; "
                            "make_lock(t + '/lock', tmp_dir=t).lock()", str(tmp_path / ".dvc" / "tmp")],
                           capture_output=True, text=True, env=project_env())
    assert probe.returncode != 0 and "Unable to acquire lock" in probe.stderr  # what `dvc repro` meets
    g.release_dvc()
    g.run_lock.close()


@pytest.mark.parametrize(("argv", "read_only"), [
    (["snakemake", "--cores", "2"], False),
    (["snakemake", "-j8"], False),
    (["snakemake", "--workflow-profile", "workflow/profiles/default", "-np", "--cores", "2"], True),
    (["snakemake", "--dry-run"], True),
    (["snakemake", "--lint"], True),
    (["snakemake", "--report", "report.html"], True),
    (["snakemake", "--unlock"], False),
    (["snakemake", "--no-such-option"], False),
])
def test_read_only_invocations(argv: list[str], read_only: bool):
    assert runlock.read_only_invocation(argv) is read_only


def dvc_project(root: Path) -> Path:
    """A DVC project with one stage whose output folder holds a plain file and a hard-linked pair."""
    env = project_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, env=env)
    out = root / "out"
    out.mkdir()
    (out / "a.txt").write_text("a\n")
    (out / "b.txt").write_text("b\n")
    os.link(out / "b.txt", out / "c.txt")  # nlink 2: what `dvc commit` relinks (a new file, a new mtime)
    (root / "dvc.yaml").write_text("stages:\n  make:\n    cmd: 'true'\n    outs:\n      - out\n")
    return root


def test_dvc_commit_records_the_workspace_without_rewriting_a_file(tmp_path: Path):
    root = dvc_project(tmp_path)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (root / "out").iterdir()}
    time.sleep(0.01)
    g = runlock.guard(root, read_only=False, take_dvc_lock=True)
    assert runlock.dvc_commit(root, held=g) == ["make"]
    g.release_dvc()
    g.run_lock.close()
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (root / "out").iterdir()} == before
    assert "md5" in (root / "dvc.lock").read_text()
    status = subprocess.run(["dvc", "status"], cwd=root, capture_output=True, text=True, env=project_env())
    assert "up to date" in status.stdout, status.stdout + status.stderr


def test_dvc_commit_skips_stages_and_reports_dvcs_error(tmp_path: Path):
    root = dvc_project(tmp_path)
    (root / "dvc.yaml").write_text((root / "dvc.yaml").read_text()
                                   + "  demo:\n    cmd: 'true'\n    outs:\n      - missing\n")
    with pytest.raises(Exception, match="missing' does not exist"):
        runlock.dvc_commit(root)
    assert runlock.dvc_commit(root, skip_stages=["demo"]) == ["make"]


def test_a_run_inside_dvc_repro_is_named_as_dvc(tmp_path: Path):
    """DVC lets go of its lock while a stage's command runs: the run lock of that stage's Snakemake
    names DVC to a second run."""
    code = ("from soundstage import runlock; import sys, time; g = runlock.guard(sys.argv[1], read_only=False, "
            "take_dvc_lock=False, under_dvc=True); print('held', flush=True); time.sleep(120)")
    inner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=project_env())
    assert inner.stdout.readline().strip() == "held"
    try:
        with pytest.raises(runlock.RunBusy, match=rf"DVC is running .*dvc repro's snakemake, pid {inner.pid} on"):
            runlock.guard(tmp_path, read_only=False, take_dvc_lock=True)
    finally:
        inner.kill()
        inner.wait()


def test_a_plain_run_holding_both_locks_is_named_as_a_run(tmp_path: Path):
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    holder = hold_in_child(tmp_path, both=True)
    try:
        with pytest.raises(runlock.RunBusy, match=rf"another run is working .*snakemake, pid {holder.pid} on"):
            runlock.guard(tmp_path, read_only=False, take_dvc_lock=True)
    finally:
        holder.kill()
        holder.wait()


def test_a_dvc_stage_in_progress_counts_as_dvc_running(tmp_path: Path):
    """DVC lets go of its lock while a stage's command runs; the stage's entries in DVC's rwlock
    file (a live pid) still say DVC is running. A dead pid's entries do not."""
    import json

    tmp = tmp_path / ".dvc" / "tmp"
    tmp.mkdir(parents=True)
    stage = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        entry = {"write": {"data/split": {"pid": stage.pid, "cmd": "dvc repro"}},
                 "read": {"data/process": [{"pid": stage.pid, "cmd": "dvc repro"}]}}
        (tmp / "rwlock").write_text(json.dumps(entry))
        with pytest.raises(runlock.RunBusy, match=rf"DVC is running .*pid {stage.pid}: dvc repro"):
            runlock.guard(tmp_path, read_only=False, take_dvc_lock=True)
        (tmp / "rwlock").write_text(json.dumps({"write": {"data/split": {"pid": dead.pid, "cmd": "dvc repro"}}}))
        g = runlock.guard(tmp_path, read_only=False, take_dvc_lock=True)
        assert g.dvc_lock is not None
        g.release_dvc()
        g.run_lock.close()
    finally:
        stage.kill()
        stage.wait()
