"""One source of truth: soundstage.stages lists each stage's code and params, and Snakemake's rules,
dvc.yaml, the cache keys, the model kinds of the schema and the CLI all agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from soundstage import stages
from soundstage.models import MODEL_KINDS

REPO = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def dvc_stage(name: str) -> dict:
    stage = DVC[name]
    return stage["do"] if "foreach" in stage else stage


@pytest.mark.parametrize("name", sorted(stages.STAGES))
def test_dvc_yaml_declares_the_stages_code_and_params(name: str):
    stage = dvc_stage(name)
    model = "${item}" if "foreach" in DVC[name] else None
    code = [d for d in stage.get("deps", []) if str(d).startswith("src/")]
    assert code == stages.code_files(name), f"dvc.yaml {name} deps should list {stages.code_files(name)}"
    assert stage.get("params", []) == stages.param_keys(name, model=model)


def test_every_dvc_stage_and_snakemake_rule_is_in_the_registry():
    assert set(DVC) == set(stages.STAGES)
    text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    rules = set(re.findall(r"^\s*(?:rule|checkpoint) (\w+):", text, re.M))
    registered = {rule for stage in stages.STAGES.values() for rule in stage.rules}
    assert rules == registered


def test_code_lists_follow_the_imports(tmp_path, monkeypatch):
    """A module a stage imports, even lazily inside a function, counts as its code."""
    for name, source in {"a": "def f():\n    from soundstage import b\n", "b": "import soundstage.c\n",
                         "c": "import numpy\nfrom soundstage import (d,\n    e as e2)  # two\n",
                         "d": "from soundstage.f import g as h\n# from soundstage import nothing\n",
                         "e": "", "f": "", "nothing": ""}.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.setattr(stages, "PACKAGE", tmp_path)
    monkeypatch.setitem(stages.STAGES, "x", stages.Stage("soundstage.a", {"x": ()}))
    stages._imports.cache_clear()
    stages.code_version.cache_clear()
    try:
        assert stages.code_modules("x") == [f"soundstage.{m}" for m in "abcdef"]
        before = stages.code_version("x")
        (tmp_path / "f.py").write_text("X = 1\n")
        stages.code_version.cache_clear()  # a process computes it once; a new process sees the change
        assert stages.code_version("x") != before
    finally:
        stages._imports.cache_clear()
        stages.code_version.cache_clear()


def test_model_kinds_are_listed_once():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "params.schema.yaml").read_text())
    props = schema["properties"]
    for section in ("train", "augment"):
        assert tuple(props[section]["properties"]["models"]["items"]["enum"]) == MODEL_KINDS, section
    assert set(MODEL_KINDS) <= set(schema["properties"])  # one params section per kind
    from soundstage.cli import build_parser

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "model")
    assert tuple(train.choices) == MODEL_KINDS
