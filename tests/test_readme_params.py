"""The README's params examples are working params: each YAML block, laid over params.yaml, validates.

A block whose keys the schema does not know, or whose values break a cross-key check (a test rule
with `column.folds`, a fold list beside train/test lists), fails here instead of on a user's run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from soundstage.config import validate_params

REPO = Path(__file__).resolve().parents[1]


def overlay(base: dict, change: dict) -> dict:
    """``base`` with ``change`` laid over it, mappings merged key by key."""
    out = dict(base)
    for key, value in change.items():
        out[key] = overlay(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def readme_blocks() -> list[tuple[str, dict]]:
    """``(first line, mapping)`` of every ```yaml block of the README that sets params sections."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = []
    for body in re.findall(r"```yaml\n(.*?)```", text, re.S):
        parsed = yaml.safe_load(body)
        if isinstance(parsed, dict) and {"data", "split", "train"} & set(parsed):
            blocks.append((body.splitlines()[0], parsed))
    return blocks


BLOCKS = readme_blocks()


def test_the_readme_shows_every_split_mode():
    modes = {block.get("split", {}).get("mode") for _, block in BLOCKS}
    assert {"column", "lists", "kfold", "leave_one_group_out"} <= modes
    assert any(b.get("split", {}).get("column", {}).get("folds") for _, b in BLOCKS)  # ESC-50's folds
    assert any(b.get("split", {}).get("lists", {}).get("folds") for _, b in BLOCKS)


@pytest.mark.parametrize(("title", "block"), BLOCKS, ids=[title for title, _ in BLOCKS])
def test_readme_params_example_validates(title: str, block: dict):
    base = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params = validate_params(overlay(base, block))
    for section, values in block.items():
        for key, value in values.items():
            if not isinstance(value, dict):
                assert params[section][key] == value, (title, section, key)


def test_a_broken_example_would_fail():
    """The check above can fail: a fold rule beside a test rule is refused."""
    base = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    bad = {"split": {"mode": "column", "column": {"name": "fold", "folds": True, "test": ["5"]}}}
    with pytest.raises(ValueError, match="split.column"):
        validate_params(overlay(base, bad))
