"""The README's "Your own data" section works as written: its DVC commands, run in a fresh repository
with this project's ``.gitignore``, and its three layout examples, run through ingest on generated data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from audio_fixtures import write_tone

from soundstage.ingest import ingest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def own_data_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text[text.index("## Your own data\n"):text.index("### Splits\n")]


def fenced(kind: str) -> list[str]:
    """Bodies of the section's ```<kind> blocks, in order (``""``: blocks without a language)."""
    return [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```$", own_data_section(), re.S | re.M)
            if lang == kind]


def example(title: str) -> dict:
    """The section's ```yaml block whose first line starts with ``# <title>``."""
    found = [b for b in fenced("yaml") if b.startswith(f"# {title}")]
    assert len(found) == 1, title
    return yaml.safe_load(found[0])


def demo_group_regex() -> str:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["data"]["folder"]["group_regex"]


# ---------------------------------------------------------------------------------------------
# Where the audio lives: what DVC accepts


def env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com"}


def sh(cmd: str, cwd: Path, *, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env(), capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return done


def dvc_repo(path: Path) -> Path:
    """A fresh git + DVC repository with this project's ``.gitignore`` (which ignores ``data/*``)."""
    path.mkdir()
    sh("git init -q && dvc init -q", path)
    shutil.copy(REPO / ".gitignore", path / ".gitignore")
    return path


def dataset(root: Path) -> Path:
    for name in ("dog/a.wav", "dog/b.wav", "rain/c.wav"):
        write_tone(root / name, sr=8000, duration=0.05)
    return root


@pytest.mark.integration
def test_dvc_commands_of_the_readme(tmp_path: Path) -> None:
    outside = dataset(tmp_path / "genres")
    repo = dvc_repo(tmp_path / "repo")

    # DVC 3 refuses a folder outside the repository, as the README says
    done = sh(f"dvc add {outside}", repo, ok=False)
    assert done.returncode != 0 and "Cached output(s) outside of DVC project" in done.stderr + done.stdout
    assert "Cached output(s) outside of DVC project" in own_data_section()

    # audio dropped under data/raw stays out of git before and after `dvc add`
    sh("mkdir -p data/raw && cp -r ../genres data/raw/genres", repo)
    assert "genres" not in sh("git status --porcelain --untracked-files=all", repo).stdout
    shutil.rmtree(repo / "data")

    # (a) the README's commands as written, the outside path replaced (no DVC remote: no push)
    block = next(b for b in fenced("sh") if "dvc add data/raw/genres" in b)
    lines = [ln.replace("/path/to/genres", str(outside)) for ln in block.splitlines() if ln and "dvc push" not in ln]
    sh("set -e\n" + "\n".join(lines), repo)
    assert (repo / "data/raw/genres.dvc").is_file()
    assert yaml.safe_load((repo / "data/raw/genres.dvc").read_text())["outs"][0]["nfiles"] == 3
    staged = sh("git ls-files", repo).stdout.split()
    assert "data/raw/genres.dvc" in staged
    assert not [f for f in staged if f.endswith(".wav")]  # the audio stays out of git

    # ... and its one-step variant
    sh(f"dvc add {outside} -o data/raw/copy", repo)
    assert (repo / "data/raw/copy.dvc").is_file() and (repo / "data/raw/copy/dog/a.wav").is_file()


@pytest.mark.integration
def test_external_dependency_is_watched_not_versioned(tmp_path: Path) -> None:
    """(b): an absolute data.root as a stage dependency, like dvc.yaml's ingest ``${data.root}``."""
    outside = dataset(tmp_path / "genres")
    repo = dvc_repo(tmp_path / "repo")
    stage = {"stages": {"ingest": {"cmd": f"ls -R {outside} > listing.txt", "deps": [str(outside)],
                                   "outs": ["listing.txt"]}}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(stage))
    sh("dvc repro -q", repo)
    assert "up to date" in sh("dvc status", repo).stdout
    write_tone(outside / "rain" / "new.wav", sr=8000, duration=0.05)
    status = sh("dvc status", repo).stdout
    assert "modified" in status and str(outside) in status
    # not cached: no audio file's content is in DVC's cache (listing.txt is)
    cached = {p.read_bytes() for p in (repo / ".dvc" / "cache" / "files").rglob("*") if p.is_file()}
    assert (repo / "listing.txt").read_bytes() in cached
    assert not cached & {p.read_bytes() for p in outside.rglob("*.wav")}


@pytest.mark.integration
def test_dvc_import_from_another_repository(tmp_path: Path) -> None:
    """(c): ``mkdir -p data/raw`` then ``dvc import <repo> <path> -o data/raw/<name>``."""
    registry = dvc_repo(tmp_path / "registry")
    dataset(registry / "audio" / "genres")
    sh("dvc add -q audio/genres && git add -A && git commit -qm data", registry)
    repo = dvc_repo(tmp_path / "repo")
    block = next(b for b in fenced("sh") if "dvc import" in b)
    cmd = re.sub(r"https://github\.com/\S+", str(registry), block)
    sh("set -e\n" + cmd, repo)
    dvc_file = yaml.safe_load((repo / "data/raw/genres.dvc").read_text())
    assert dvc_file["deps"][0]["repo"]["rev_lock"] and (repo / "data/raw/genres/rain/c.wav").is_file()


# ---------------------------------------------------------------------------------------------
# The three layout examples


def tone(path: Path) -> None:
    write_tone(path, sr=8000, duration=0.05)


def quiet_ingest(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a group pattern that misses files would warn
        return ingest(**kw)


def test_folder_example_labels_by_label_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = example("folder per class")["data"]
    assert d["layout"] == "folder" and d["folder"]["group_regex"] != demo_group_regex()
    monkeypatch.chdir(tmp_path)
    root = Path(d["root"])
    files = ["percussion/kick/anna_01", "percussion/kick/anna_02", "percussion/kick/bob_01",
             "percussion/snare/anna_01", "percussion/snare/carl_01", "violin/bob_01", "violin/carl_01"]
    for name in files:
        tone(root / f"{name}.wav")
    kw = {"root": root, "layout": "folder", "extensions": d["extensions"], "group_regex": d["folder"]["group_regex"]}

    # -1 (the README's value and the default): the innermost folder
    assert d["folder"]["label_level"] == -1
    manifest, rejected = quiet_ingest(label_level=-1, **kw)
    assert rejected.empty
    assert dict(zip(manifest["id"], manifest["label"])) == {
        f: ("violin" if f.startswith("violin") else f.split("/")[1]) for f in files}
    assert manifest.groupby("label")["group"].agg(lambda g: sorted(set(g))).to_dict() == {
        "kick": ["anna", "bob"], "snare": ["anna", "carl"], "violin": ["bob", "carl"]}

    # 0: the top folder
    manifest, rejected = quiet_ingest(label_level=0, **kw)
    assert rejected.empty and set(manifest["label"]) == {"percussion", "violin"}

    # 1: violin files have no folder there
    manifest, rejected = quiet_ingest(label_level=1, **kw)
    assert set(manifest["label"]) == {"kick", "snare"}
    assert sorted(rejected["id"]) == ["violin/bob_01", "violin/carl_01"]
    assert set(rejected["reason"]) == {"no_class_folder"}

    # the demo's pattern, shipped in params.yaml, matches none of these files: said, not silent
    with pytest.warns(UserWarning, match=r"data\.folder\.group_regex .* matches no file"):
        ingest(**{**kw, "group_regex": demo_group_regex()})


def test_csv_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = example("metadata CSV")["data"]
    monkeypatch.chdir(tmp_path)
    shown = next(b for b in fenced("") if b.startswith(f"{d['csv']['path']}:"))
    csv_text = shown.split("\n", 1)[1]
    Path(d["csv"]["path"]).parent.mkdir(parents=True)
    Path(d["csv"]["path"]).write_text(csv_text, encoding="utf-8")
    for line in csv_text.splitlines()[1:]:
        tone(Path(d["csv"]["path"]).parent / line.split(",")[0])
    c = d["csv"]
    manifest, rejected = quiet_ingest(root=d["root"], layout="csv", extensions=d["extensions"], csv_path=c["path"],
                                      path_column=c["path_column"], label_column=c["label_column"],
                                      group_column=c["group_column"], transcript_column=c["transcript_column"])
    assert rejected.empty
    assert manifest["label"].tolist() == ["calm", "angry", "angry"]  # sorted by id: wav/a01_dogs first
    assert manifest["group"].tolist() == ["a01", "a01", "a02"]
    assert manifest["sentence"].tolist() == ["dogs", "kids", "kids"]  # another column, kept


def test_regex_example(tmp_path: Path) -> None:
    d = example("labels in file names")["data"]
    root = tmp_path / "recordings"
    for name in ("7_jackson_32", "7_theo_0", "0_jackson_1"):
        tone(root / f"{name}.wav")
    tone(root / "notes_01.wav")
    manifest, rejected = quiet_ingest(root=root, layout="regex", extensions=d["extensions"],
                                      pattern=d["regex"]["pattern"])
    assert dict(zip(manifest["id"], zip(manifest["label"], manifest["group"], manifest["take"]))) == {
        "0_jackson_1": ("0", "jackson", "1"), "7_jackson_32": ("7", "jackson", "32"), "7_theo_0": ("7", "theo", "0")}
    assert rejected["reason"].tolist() == ["no_match"]
