"""Sharing data through DVC remotes: after a pipeline run, `dvc push` to a remote; in a fresh `git clone`,
`dvc pull` brings every output back and nothing is recomputed: `dvc status` is clean and, once
`snakemake --touch --forceall` has stamped the pulled files in pipeline order, `snakemake -n` has nothing
to do, and a parameter change re-runs only what it touches. Once through a local folder remote, once
through S3 (a moto server on 127.0.0.1, started and stopped here), with the commands of the README's
"Running on a cluster".
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import BIN, make_project, run, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("remotes")]

SNAKEMAKE = ["snakemake", "--workflow-profile", "workflow/profiles/default", "--cores", "2"]
#: Outputs compared byte for byte between the original and the clone (one of each stage).
SAMPLES = ["data/demo", "data/ingest/manifest.csv", "data/process/shards/000.csv", "data/split/folds.csv",
           "data/features/table.parquet", "data/stats/0/logmel.npz", "models/random_forest/folds/0/bundle.json",
           "reports/evaluate/random_forest/folds/0/predictions_test.csv", "reports/metrics.json",
           "reports/dataset/report.md"]


def digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and bytes)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        h.update(f.read_bytes())
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """A project whose pipeline ran (Snakemake recorded the run in dvc.lock), committed to git."""
    root = make_project(tmp_path_factory.mktemp("origin") / "soundstage",
                        tiny_params(**{"train.models": ["random_forest"]}))
    run(SNAKEMAKE, root)
    assert "up to date" in run(["dvc", "status"], root).stdout
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "pipeline run"], root)
    return root


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (free port) with an empty bucket `soundstage`. botocore is kept
    from asking the EC2 metadata address for credentials: every request goes to 127.0.0.1."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"moto server did not start:\n{log.read_text()[-3000:]}"
                time.sleep(0.3)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="soundstage")
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)
        mp.undo()


def pulled_clone(origin: Path, dest: Path, *configure: list[str]) -> Path:
    """`git clone` of ``origin`` into ``dest``, the ``configure`` commands run in it (credentials, which
    are not committed), `dvc pull`, and the step that tells Snakemake what DVC knows.

    `dvc pull` writes the outputs in no particular order, and a clone has no Snakemake metadata: Snakemake,
    which compares modification times, would re-run whichever rule's inputs happened to be written after
    its outputs. Once `dvc status` is clean (every output is what this commit's code, params and data give),
    `snakemake --touch --forceall` stamps the outputs in pipeline order and records their metadata,
    without changing a byte: `make pull` does both."""
    run(["git", "clone", "-q", str(origin), str(dest)], dest.parent)
    assert not (dest / "data" / "features").exists() and not (dest / "models").exists()  # what DVC caches
    for cmd in configure:
        run(cmd, dest)
    run(["make", "pull"], dest)
    assert_dvc_clean(dest)
    return dest


def assert_dvc_clean(root: Path) -> None:
    status = run(["dvc", "status"], root)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout


def assert_nothing_to_recompute(clone: Path, origin: Path) -> None:
    dry = run(["snakemake", "-n"], clone)
    out = dry.stdout + dry.stderr
    assert "Nothing to be done" in out, out[-3000:]
    assert "missing provenance/metadata" not in out, out[-3000:]  # later param or code changes are seen
    assert_dvc_clean(clone)
    for rel in SAMPLES:
        assert digest(clone / rel) == digest(origin / rel), rel


def test_local_remote_round_trip(origin: Path, tmp_path: Path):
    remote = tmp_path / "dvc-storage"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], origin)
    run(["git", "commit", "-qm", "a DVC remote", ".dvc/config"], origin)
    push = run(["dvc", "push"], origin)
    assert "pushed" in push.stdout, push.stdout
    assert any((remote / "files" / "md5").rglob("*")), "nothing in the remote"
    assert "in sync" in run(["dvc", "status", "--cloud"], origin).stdout.lower()
    clone = pulled_clone(origin, tmp_path / "clone")
    assert_nothing_to_recompute(clone, origin)
    # the clone tracks changes like the original: a model's parameter re-runs that model only
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["random_forest"]["n_estimators"] = 30
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = run([*SNAKEMAKE, "-n"], clone)
    jobs = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", dry.stdout, re.M))
    assert jobs == {"train", "evaluate", "aggregate", "metrics", "all"}, jobs


def test_s3_remote_round_trip(origin: Path, tmp_path: Path, s3_endpoint: str):
    keys = [["dvc", "remote", "modify", "--local", "s3", "access_key_id", "testing"],
            ["dvc", "remote", "modify", "--local", "s3", "secret_access_key", "testing"]]
    run(["dvc", "remote", "add", "-d", "s3", "s3://soundstage/pipeline"], origin)
    run(["dvc", "remote", "modify", "s3", "endpointurl", s3_endpoint], origin)
    for cmd in keys:
        run(cmd, origin)
    run(["git", "commit", "-qm", "an S3 remote", ".dvc/config"], origin)
    assert "testing" not in (origin / ".dvc" / "config").read_text()  # the keys stay out of git
    push = run(["dvc", "push"], origin)
    assert "pushed" in push.stdout, push.stdout

    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    listed = s3.list_objects_v2(Bucket="soundstage", Prefix="pipeline/files/md5/")
    assert listed["KeyCount"] > 0
    clone = pulled_clone(origin, tmp_path / "clone", *keys)
    assert_nothing_to_recompute(clone, origin)
