"""The cluster profile against a real one-node SLURM: the whole pipeline through sbatch gives the same
outputs as a local run, training logs to a real MLflow tracking server, and with --keep-going a failing
job is reported as failed while every other job finishes.

The fixture starts SLURM as root the way a cluster runs it (munged, slurmctld, slurmd, each with this
test's own configuration, key, ports and state folders, all bound to 127.0.0.1) and stops it at the end,
also when a test fails. Skipped, saying why, only when not root or the binaries are missing
(`make system-deps` installs slurm-wlm and munge).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import BIN, make_project, output_digests, project_env, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
# Where job steps find the cluster's configuration (see publish_node_conf).
NODE_CONF = Path("/run/slurm/conf/slurm.conf")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
LOCAL = ["snakemake", "--workflow-profile", "workflow/profiles/default", "--cores", "2"]


def cluster_cmd(cpus: int) -> list[str]:
    """The profile's command, for this node: a cluster node has more cores than this machine, so training
    gets at most the node's CPUs instead of the profile's 4 (--cpus-per-task follows the threads), and the
    first status check comes after 2 s instead of 20."""
    return ["snakemake", "--workflow-profile", "workflow/profiles/slurm", "--set-threads", f"train={min(4, cpus)}",
            "--slurm-init-seconds-before-status-checks", "2"]

# A test-only workflow: the project's pipeline plus one rule whose job always fails (production code
# and rules stay as they are).
FAILING_WORKFLOW = """\
include: "Snakefile"


rule injected_failure:
    input:
        "data/features/table.parquet",
    output:
        "reports/injected_failure.txt",
    log:
        "logs/injected_failure.log",
    shell:
        "echo 'injected failure' | tee {log} >&2; exit 3"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], what: str, timeout: float, *, logs: list[Path] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.is_file())
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen, *, group: bool = False) -> None:
    """SIGTERM a process this test started (its whole session with ``group``), SIGKILL after 20 s."""
    if proc.poll() is not None:
        return
    send = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            send(signal.SIGKILL)
        proc.wait(20)


@dataclass
class Slurm:
    conf: Path
    cpus: int  # the node's
    logs: list[Path]

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, Snakemake's SLURM executor) needs to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env={**os.environ, **self.env, "PATH": SBIN_PATH}, capture_output=True, text=True,
                              timeout=60)


def node_line() -> str:
    """This host as ``slurmd -C`` sees it: ``NodeName=<host> CPUs=2 ... RealMemory=<MB>``."""
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True, env={"PATH": SBIN_PATH})
    return node.stdout.splitlines()[0]


def slurm_conf(root: Path, munge_socket: Path, node_line: str) -> str:
    """A one-node cluster: this host with its real CPUs and memory, no accounting, no cgroups (processes
    tracked through /proc), daemons on 127.0.0.1 only."""
    name = node_line.split()[0].split("=", 1)[1]
    return f"""\
ClusterName=soundstage
SlurmctldHost={name}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
MinJobAge=3600
ReturnToService=2
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes={name} Default=YES MaxTime=INFINITE State=UP
"""


def publish_node_conf(conf: Path) -> list[Path]:
    """Link ``conf`` where SLURM clients on a node look when SLURM_CONF is unset (the place of a
    configless node's copy; /run is cleared at boot), returning the folders made for it.

    Needed because the jobstep plugin (0.6) starts each job's ``srun`` with every SLURM_* variable but the
    job's identity removed, SLURM_CONF included: on a real cluster that ``srun`` reads the node's config."""
    made = [p for p in (NODE_CONF.parent.parent, NODE_CONF.parent) if not p.exists()]
    NODE_CONF.parent.mkdir(parents=True, exist_ok=True)
    try:
        NODE_CONF.symlink_to(conf)
    except FileExistsError:
        pytest.skip(f"{NODE_CONF} appeared meanwhile: another SLURM node started on this machine")
    return made


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    if os.geteuid() != 0:
        pytest.skip("starting munged, slurmctld and slurmd needs root")
    missing = [b for b in SLURM_BINARIES if shutil.which(b, path=SBIN_PATH) is None]
    if missing:
        pytest.skip(f"SLURM binaries missing: {', '.join(missing)} (`make system-deps` installs slurm-wlm, munge)")
    if NODE_CONF.is_symlink() and not NODE_CONF.exists() and "soundstage-slurm-" in os.readlink(NODE_CONF):
        NODE_CONF.unlink()  # left behind by a killed run of this test
    if NODE_CONF.exists() or NODE_CONF.is_symlink() or Path("/etc/slurm/slurm.conf").exists():
        pytest.skip("this machine is configured as a SLURM node already (/run/slurm/conf or /etc/slurm/slurm.conf); "
                    "the test starts a cluster of its own")
    # Short path: the munge socket's path must fit a sockaddr_un (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="soundstage-slurm-"))
    root.chmod(0o755)  # munged wants its socket's folders searchable by everyone
    for name in ("munge", "state", "spool", "log"):
        (root / name).mkdir(mode=0o700)
    (root / "run").mkdir(mode=0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)
    munge_socket = root / "run" / "munge.socket"
    conf = root / "slurm.conf"
    node = node_line()
    conf.write_text(slurm_conf(root, munge_socket, node))
    cpus = int(re.search(r"\bCPUs=(\d+)", node).group(1))
    cluster = Slurm(conf, cpus, [root / "log" / f"{d}.log" for d in ("munged", "slurmctld", "slurmd")])
    env = {**os.environ, **cluster.env, "PATH": SBIN_PATH}
    daemons: list[subprocess.Popen] = []
    made: list[Path] = []

    def start(cmd: list[str], log: str) -> None:
        with open(root / "log" / f"{log}.out", "w") as out:
            daemons.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL))

    try:
        made = publish_node_conf(conf)
        start(["munged", "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
               f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/log/munged.log",
               f"--seed-file={root}/munge/seed"], "munged")
        wait_until(munge_socket.exists, "munged's socket", 30, logs=cluster.logs)
        start(["slurmctld", "-D", "-i", "-f", str(conf)], "slurmctld")
        start(["slurmd", "-D", "-f", str(conf)], "slurmd")

        def idle() -> bool:
            assert all(d.poll() is None for d in daemons), [d.args[0] for d in daemons if d.poll() is not None]
            return cluster.run("sinfo", "--noheader", "--format=%T").stdout.strip() == "idle"

        wait_until(idle, "the node to be idle in sinfo", 90, logs=cluster.logs)
        yield cluster
    finally:
        if len(daemons) == 3 and daemons[1].poll() is None:
            cluster.run("scancel", "--user=root")  # jobs of this test's cluster only (its SLURM_CONF)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not cluster.run("squeue", "--noheader", "--states=RUNNING,PENDING").stdout.strip(),
                           "cancelled jobs to end", 30)
        for daemon in reversed(daemons):
            stop(daemon)
        if NODE_CONF.is_symlink() and os.readlink(NODE_CONF) == str(conf):
            NODE_CONF.unlink()
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (free port), with its own SQLite store and artifact folder."""
    where = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = where / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{where / 'mlflow.db'}",
             "--artifacts-destination", str(where / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            env=project_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own session: stopping it stops its workers

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, "the MLflow server", 120, logs=[log])
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, group=True)




@dataclass
class Runs:
    local: Path
    cluster: Path
    cluster_run: subprocess.CompletedProcess
    tracking_uri: str


def params(data: Path | None = None) -> dict:
    p = tiny_params()
    p["keras_mlp"].update(epochs=8, patience=4)
    if data is not None:
        p["data"]["root"] = str(data)
    return p


def own_data_project(dest: Path, data: Path) -> Path:
    """A fresh clone reading the audio in ``data`` (the demo stage removed from dvc.yaml, as the README says
    for your own data)."""
    root = make_project(dest, params(data))
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    del dvc["stages"]["demo"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, slurm: Slurm, mlflow_server: str) -> Runs:
    """The same project run twice on the same audio: locally (default profile) and through SLURM (slurm
    profile, the failing rule added, --keep-going), side by side. The audio lies outside both projects, so
    the paths the manifest records (and every output after it) are the same in both."""
    from soundstage.demo import make_demo

    data = tmp_path_factory.mktemp("audio") / "tiny"
    p = params()
    demo = p["demo"]
    make_demo(out_dir=data, n_classes=demo["n_classes"], clips_per_class=demo["clips_per_class"],
              n_artists=demo["n_artists"], duration=demo["duration"], sample_rate=demo["sample_rate"], seed=p["seed"])
    local = own_data_project(tmp_path_factory.mktemp("local") / "soundstage", data)
    cluster = own_data_project(tmp_path_factory.mktemp("cluster") / "soundstage", data)
    (cluster / "failing.smk").write_text(FAILING_WORKFLOW)

    def env(**extra: str) -> dict[str, str]:
        # numba's disk cache is unsafe with concurrent writers: one per run
        return {**project_env(), "NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp("numba")), **extra}

    local_log = local.parent / "snakemake.log"
    with open(local_log, "w") as out:
        local_proc = subprocess.Popen(LOCAL, cwd=local, env=env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        cluster_run = subprocess.run(
            [*cluster_cmd(slurm.cpus), "--snakefile", "failing.smk", "--keep-going", "--", "all",
             "reports/injected_failure.txt"],
            cwd=cluster, env=env(MLFLOW_TRACKING_URI=mlflow_server, **slurm.env), capture_output=True, text=True,
            timeout=1200)
        local_proc.wait(timeout=900)
    finally:
        stop(local_proc)
    assert local_proc.returncode == 0, local_log.read_text()[-4000:]
    return Runs(local, cluster, cluster_run, mlflow_server)


def cluster_log(runs: Runs) -> str:
    return runs.cluster_run.stdout + runs.cluster_run.stderr


def test_every_job_went_through_sbatch(runs: Runs, slurm: Slurm):
    """One SLURM job per Snakemake job (only the target rule `all` stays local), each as its rule asked."""
    submitted = set(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", cluster_log(runs)))
    listed = slurm.run("squeue", "--noheader", "--states=all", "--format=%i|%T|%k|%C|%m").stdout.split()
    jobs = {i: (state, comment, cpus, mem) for i, state, comment, cpus, mem in (x.split("|") for x in listed)}
    assert submitted and submitted <= set(jobs), (submitted, jobs)
    rules = Counter(re.match(r"rule_([a-z_]+?)(_wildcards_.*)?$", jobs[i][1]).group(1) for i in submitted)
    assert rules == {"ingest": 1, "process": 2, "split": 1, "features": 2, "features_table": 1, "stats": 1,
                     "train": 2, "evaluate": 2, "aggregate": 2, "metrics": 1, "report": 1, "injected_failure": 1}, rules
    for i in submitted:
        state, comment, cpus, mem = jobs[i]
        assert state == ("FAILED" if comment.startswith("rule_injected_failure") else "COMPLETED"), jobs[i]
        if comment.startswith("rule_train"):
            assert (cpus, mem) == (str(min(4, slurm.cpus)), "8000M"), jobs[i]  # the profile's, on this node
        elif comment.startswith("rule_process"):
            assert (cpus, mem) == ("1", "2000M"), jobs[i]


def test_a_failing_job_is_reported_while_the_rest_finish(runs: Runs):
    log = cluster_log(runs)
    assert runs.cluster_run.returncode != 0
    assert "Error in rule injected_failure" in log, log[-3000:]
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", log), log[-3000:]
    assert "injected failure" in (runs.cluster / "logs/injected_failure.log").read_text()
    # its sbatch log is kept (those of successful jobs are removed)
    kept = list((runs.cluster / "logs/slurm").rglob("*.log"))
    assert [p.parent.name for p in kept] == ["rule_injected_failure"], kept
    assert not (runs.cluster / "reports/injected_failure.txt").exists()
    assert (runs.cluster / "reports/metrics.json").is_file() and (runs.cluster / "reports/dataset/report.md").is_file()


def test_outputs_are_those_of_a_local_run(runs: Runs):
    local, cluster = output_digests(runs.local), output_digests(runs.cluster)
    assert sorted(cluster) == sorted(local), set(cluster) ^ set(local)
    for rel in ("data/features/table.parquet", "data/stats/0/logmel.npz", "data/split/folds.csv",
                "reports/evaluate/keras_mlp/folds/0/predictions_test.csv", "reports/metrics.json"):
        assert rel in local
    differ = [k for k in local if cluster[k] != local[k]]
    assert not differ, f"{len(differ)} outputs differ from the local run, e.g. {differ[:5]}"


def test_training_runs_are_on_the_tracking_server(runs: Runs):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=runs.tracking_uri)
    exp = client.get_experiment_by_name("demo")
    assert exp is not None
    found = client.search_runs([exp.experiment_id])
    by_model = {r.data.tags["model"]: r for r in found}
    assert set(by_model) == {"random_forest", "keras_mlp"} and len(found) == 2
    for model, r in by_model.items():
        assert r.info.status == "FINISHED", model
        assert {"val_accuracy", "test_accuracy"} <= set(r.data.metrics), model
        assert r.info.artifact_uri.startswith("mlflow-artifacts:"), r.info.artifact_uri  # stored by the server
        assert "evaluation/confusion_test.json" in {a.path for a in client.list_artifacts(r.info.run_id, "evaluation")}
        bundle = json.loads((runs.cluster / f"models/{model}/folds/0/bundle.json").read_text())
        assert bundle["mlflow"]["tracking_uri"] == runs.tracking_uri and bundle["mlflow"]["run_id"] == r.info.run_id
    # no job fell back to a SQLite file in the project
    assert not (runs.cluster / "mlflow.db").exists()


def test_a_local_look_finds_nothing_to_do(runs: Runs):
    """What the cluster jobs recorded (outputs, Snakemake's metadata) is what a local run expects."""
    dry = subprocess.run([*LOCAL, "-n"], cwd=runs.cluster, env=project_env(), capture_output=True, text=True,
                         timeout=300)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_the_profile_requires_a_tracking_server(tmp_path: Path, slurm: Slurm):
    """Without MLFLOW_TRACKING_URI the profile refuses to start: jobs on many nodes must not share the
    project's SQLite file."""
    root = make_project(tmp_path / "soundstage", params())
    proc = subprocess.run([*cluster_cmd(slurm.cpus), "-n"], cwd=root, env={**project_env(), **slurm.env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "MLFLOW_TRACKING_URI" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
