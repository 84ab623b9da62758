"""One pipeline run at a time per project, and nothing left behind by a run that died.

``snakemake`` (directly, or as each ``dvc repro`` stage runs it) calls :func:`guard` while it reads the
Snakefile, before it builds the DAG or deletes any output:

- It takes the project's run lock, an exclusive ``flock`` on ``.snakemake/soundstage.lock`` held until
  the process exits (the kernel releases it when the process dies, even by ``SIGKILL``). A second run
  while one is alive stops there, with a message naming the live one.
- A plain ``snakemake`` also takes DVC's repository lock (``.dvc/tmp/lock``, DVC's own lock class), so
  ``dvc repro`` started meanwhile stops before it deletes anything, and ``snakemake`` started while DVC
  runs stops with a message. Inside ``dvc repro`` DVC holds that lock itself.
- Holding the run lock proves that no run is alive, so whatever runs left behind is garbage and is
  removed (:func:`recover`): Snakemake's stale locks (the ``--unlock`` a killed run would otherwise
  demand), the outputs of jobs a dead run left incomplete (as ``--rerun-incomplete`` would), and the
  temporary files of killed writers.

Read-only invocations (``-n``, ``--lint``, ``--report``, ``--summary``...) neither wait nor refuse: they
recover only when no run is alive, and never take DVC's lock.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shutil
import sys
from base64 import urlsafe_b64decode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soundstage.io import is_temp_name

#: Where the run lock lives, relative to the project (Snakemake's own folder, never versioned).
LOCK_FILE = ".snakemake/soundstage.lock"
#: How the run lock names a Snakemake that ``dvc repro`` runs for a stage.
UNDER_DVC_LABEL = "dvc repro's snakemake"
#: Snakemake options that only read: such invocations never refuse to start.
READ_ONLY_OPTIONS = ("dryrun", "lint", "list_rules", "list_target_rules", "list_changes", "summary",
                     "detailed_summary", "report", "dag", "rulegraph", "filegraph", "d3dag", "print_compilation",
                     "containerize", "export_cwl", "list_untracked", "archive", "generate_unit_tests")


class RunBusy(RuntimeError):
    """Another run (Snakemake or DVC) is alive in this project."""


@dataclass
class Guard:
    """What :func:`guard` holds for the rest of the process."""

    project: Path
    run_lock: Any = None  # open file holding the flock
    dvc_lock: Any = None  # DVC's lock object, held
    recovered: dict[str, int] = field(default_factory=dict)

    def release_dvc(self) -> None:
        """Let go of DVC's repository lock (before this process runs DVC itself)."""
        if self.dvc_lock is not None:
            with contextlib.suppress(Exception):
                self.dvc_lock.unlock()
            self.dvc_lock = None


def read_only_invocation(argv: Sequence[str] | None = None) -> bool:
    """Whether ``snakemake``'s command line (``sys.argv`` by default) only reads (dry run, lint,
    report...): parsed with Snakemake's own argument parser; anything it cannot parse counts as a run."""
    argv = list(sys.argv if argv is None else argv)
    try:
        from snakemake.cli import get_argument_parser

        args, _ = get_argument_parser().parse_known_args(argv[1:])
    except (ImportError, SystemExit, Exception):  # noqa: BLE001 - an unknown command line is a run
        return False
    return any(getattr(args, name, False) for name in READ_ONLY_OPTIONS)


def guard(project: str | Path = ".", *, read_only: bool, take_dvc_lock: bool, under_dvc: bool = False,
          outputs: Iterable[str] = ("data", "models", "reports")) -> Guard:
    """Take the run lock (and DVC's, when ``take_dvc_lock``), then :func:`recover`.

    Raises :class:`RunBusy` naming the live run, unless ``read_only`` (then nothing is taken and, with
    a run alive, nothing is recovered either). ``under_dvc``: this is a stage of ``dvc repro``, which
    lets go of DVC's lock while a stage runs; the run lock then names DVC to a second run.
    """
    project = Path(project)
    g = Guard(project)
    dvc = take_dvc_lock and not read_only and (project / ".dvc").is_dir()
    try:
        g.run_lock = _take_run_lock(project, label=UNDER_DVC_LABEL if under_dvc else "snakemake")
    except RunBusy:
        if read_only:
            return g
        raise
    if dvc:
        try:
            g.dvc_lock = _take_dvc_lock(project)
        except RunBusy:
            g.run_lock.close()
            raise
    g.recovered = recover(project, outputs=outputs)
    return g


def _take_run_lock(project: Path, label: str = "snakemake") -> Any:
    path = project / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the process's lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown process"
        fh.close()
        who = "DVC is running" if holder.startswith(UNDER_DVC_LABEL) else "another run is working"
        raise RunBusy(f"{who} in {project.resolve()} ({holder}). This run stopped before touching anything: "
                      "wait for that one to finish, then run the same command again.") from None
    fh.seek(0)
    fh.truncate()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    fh.write(f"{label}, pid {os.getpid()} on {os.uname().nodename}, started {started}: "
             f"{' '.join(sys.argv)[:300]}\n")
    fh.flush()
    return fh


def _take_dvc_lock(project: Path) -> Any:
    from dvc.lock import LockError, make_lock

    tmp_dir = project / ".dvc" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    hardlink = _dvc_hardlink_lock(project)
    lock = make_lock(str(tmp_dir / "lock"), tmp_dir=str(tmp_dir), hardlink_lock=hardlink)
    try:
        lock.lock()
    except LockError:
        holder = _dvc_holder(tmp_dir / "lock")
    else:
        # `dvc repro` lets go of the repository lock while a stage's command runs, and holds the
        # stage's paths in its rwlock file meanwhile: a live entry there is a DVC run too.
        holder = _dvc_stage_running(tmp_dir, hardlink)
        if holder is None:
            return lock
        lock.unlock()
    raise RunBusy(f"DVC is running in {project.resolve()} ({holder}). This run stopped before touching "
                  "anything: wait for it to finish, then run the same command again.")


def _dvc_stage_running(tmp_dir: Path, hardlink: bool) -> str | None:
    """``pid N: <command>`` of a live process holding paths in DVC's rwlock file, else ``None``."""
    import json

    from dvc.lock import make_lock
    from dvc.rwlock import RWLOCK_FILE, RWLOCK_LOCK

    path = tmp_dir / RWLOCK_FILE
    if not path.is_file():
        return None
    with make_lock(str(tmp_dir / RWLOCK_LOCK), tmp_dir=str(tmp_dir), hardlink_lock=hardlink):
        try:
            held = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return None
    infos = [*held.get("write", {}).values(), *(i for infos in held.get("read", {}).values() for i in infos)]
    for info in infos:
        pid = int(info.get("pid", 0))
        if pid > 0 and pid != os.getpid() and _alive(pid):
            return f"pid {pid}: {info.get('cmd', 'dvc')}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dvc_hardlink_lock(project: Path) -> bool:
    """``core.hardlink_lock`` from the project's DVC config (DVC picks its lock class by it)."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read([project / ".dvc" / "config", project / ".dvc" / "config.local"])
    return parser.get("core", "hardlink_lock", fallback="false").strip().lower() in ("true", "1", "yes")


def _dvc_holder(lock_file: Path) -> str:
    """``pid N: <command line>`` from DVC's lock file (it holds the pid) and /proc, where readable."""
    try:
        pid = int(lock_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return "another DVC command"
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return f"pid {pid}: {' '.join(a.decode(errors='replace') for a in args if a)[:200]}"
    except OSError:
        return f"pid {pid}"


def recover(project: str | Path, *, outputs: Iterable[str] = ("data", "models", "reports")) -> dict[str, int]:
    """Remove what dead runs left behind; call only while holding the run lock.

    - Snakemake's lock files (``.snakemake/locks/*``): what ``snakemake --unlock`` removes.
    - Outputs marked incomplete (``.snakemake/incomplete/``: jobs that were running when their
      Snakemake died) and their markers: what ``--rerun-incomplete`` does before re-running them.
    - Temporary files of killed writers (``.<name>.tmp-*``, :func:`soundstage.io.is_temp_name`) under
      the ``outputs`` folders.

    Returns the number of each removed: ``{"locks": n, "incomplete": n, "temp_files": n}``.
    """
    project = Path(project)
    done = {"locks": 0, "incomplete": 0, "temp_files": 0}
    lock_dir = project / ".snakemake" / "locks"
    for lock in lock_dir.glob("*.lock") if lock_dir.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            done["locks"] += 1
    for marker, output in _incomplete_markers(project / ".snakemake" / "incomplete"):
        target = project / output
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        done["incomplete"] += 1
    for root in outputs:
        for dirpath, _, filenames in os.walk(project / root):
            for name in filenames:
                if is_temp_name(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, name))
                        done["temp_files"] += 1
    return done


def _incomplete_markers(folder: Path) -> list[tuple[Path, str]]:
    """``(marker, output path)`` of Snakemake's incomplete markers (its file persistence: the path
    base64-encoded, long names split into ``@``-prefixed folders)."""
    found = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            marker = Path(dirpath, name)
            parts = marker.relative_to(folder).parts
            if parts and parts[0] == "migration_underway":
                continue
            encoded = "".join(p[1:] if p.startswith("@") else p for p in parts)
            try:
                output = urlsafe_b64decode(encoded.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            if output and not os.path.isabs(output) and ".." not in Path(output).parts:
                found.append((marker, output))
    return found


def dvc_commit(project: str | Path = ".", *, skip_stages: Iterable[str] = (), held: Guard | None = None) -> list[str]:
    """Record the workspace in ``dvc.lock`` after a plain Snakemake run, without touching a file.

    ``dvc commit --force --no-relink`` on every stage but ``skip_stages``, in this process: DVC hashes
    the outputs and copies them into its cache, and never rewrites a workspace file (relinking would
    give them new modification times, which Snakemake reads as changed inputs). With ``held`` (this
    process already holds DVC's lock, from :func:`guard`) the lock is never let go in between, so no
    ``dvc repro`` can start before the commit. Returns the committed stage names.
    """
    from dvc.lock import LockNoop
    from dvc.repo import Repo

    skip = set(skip_stages)
    committed = []
    with Repo(str(project)) as repo:
        if held is not None and held.dvc_lock is not None:
            repo.lock = LockNoop()  # this process holds the real one
        for stage in repo.index.stages:
            name = stage.addressing
            if stage.name in skip or name in skip:
                continue
            repo.commit(name, force=True, relink=False)
            committed.append(stage.name)
    return committed
