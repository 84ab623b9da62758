"""The pipeline's stages: the params each one reads and the code that shapes its outputs.

The one source for what Snakemake's rules watch (`workflow/rules/common.smk`), what `dvc.yaml`
declares as a stage's ``deps`` and ``params`` (a test checks that they agree) and what the per-clip
caches of ``process`` and ``features`` key on. A stage's code is its module and every
``soundstage`` module that it imports, directly or not (read from the source, nothing imported).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
#: Stands for the trained model's name (a ``train.models`` entry) in :attr:`Stage.params`.
MODEL = "{model}"


@dataclass(frozen=True)
class Stage:
    """``module``: the stage's module (``soundstage.<name>``); ``rules``: the dotted keys of
    ``params.yaml`` (a whole section, or one key of it) that each of its Snakemake rules reads. The
    DVC stage reads their union."""

    module: str
    rules: dict[str, tuple[str, ...]]
    #: Keys no rule reads that decide which outputs the stage has (DVC's stage re-runs on them).
    targets: tuple[str, ...] = ()


#: Named as the DVC stages; ``metrics`` is the evaluation summary.
STAGES: dict[str, Stage] = {
    "demo": Stage("soundstage.demo", {"demo": ("seed", "demo")}),
    "ingest": Stage("soundstage.ingest", {"ingest": ("data", "sharding")}),
    "process": Stage("soundstage.process", {"process": ("process", "sharding")}),
    "split": Stage("soundstage.split", {"split": ("seed", "split", "data.root")}),
    "features": Stage("soundstage.features", {"features": ("features", "sharding"),
                                              "features_table": ("data.max_rejected_share",)}),
    "stats": Stage("soundstage.stats", {"stats": ("stats",)}, targets=("train.refit",)),
    "train": Stage("soundstage.train", {"train": ("seed", "data.name", "mlflow", "augment", MODEL)},
                   targets=("train.refit",)),
    "evaluate": Stage("soundstage.evaluate", {"evaluate": ("seed", "evaluate"), "aggregate": ("mlflow",)}),
    "metrics": Stage("soundstage.evaluate", {"metrics": ()}),
    "report": Stage("soundstage.report", {"report": ("seed", "data.name", "sharding",
                                                     "data.max_rejected_share", "features.save")}),
}


#: ``from soundstage[.mod] import names`` (names possibly in parentheses) and ``import soundstage.mod``,
#: anywhere in a module's source, inside a function or not.
_IMPORT = re.compile(r"^\s*(?:from\s+soundstage(?:\.(\w+))?\s+import\s+(\([^)]*\)|[^\n#]+)|import\s+soundstage\.(\w+))",
                     re.MULTILINE)


@cache
def _imports(module: str) -> frozenset[str]:
    """The ``soundstage`` modules ``module``'s source imports. Read with a regular expression: every
    shard process pays this, and parsing the sources would cost it ~40 ms."""
    found = set()
    for sub, names, plain in _IMPORT.findall((PACKAGE / f"{module.rpartition('.')[2]}.py").read_text(encoding="utf-8")):
        if sub or plain:
            found.add(f"soundstage.{sub or plain}")
        else:
            found.update(f"soundstage.{n.split(' as ')[0].strip()}" for n in names.strip("()").split(",") if n.strip())
    return frozenset(m for m in found if (PACKAGE / f"{m.rpartition('.')[2]}.py").is_file())


def code_modules(stage: str) -> list[str]:
    """The stage's module and every ``soundstage`` module it imports, directly or not, sorted."""
    seen: set[str] = set()
    todo = [STAGES[stage].module]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imports(module) - seen)
    return sorted(seen)


def code_files(stage: str) -> list[str]:
    """:func:`code_modules` as paths relative to the repository (``src/soundstage/<name>.py``)."""
    return [f"src/soundstage/{m.rpartition('.')[2]}.py" for m in code_modules(stage)]


@cache
def code_version(stage: str) -> str:
    """Hash of the source of :func:`code_modules`: cached per-clip results die with the code."""
    digest = hashlib.sha1()
    for module in code_modules(stage):
        digest.update((PACKAGE / f"{module.rpartition('.')[2]}.py").read_bytes())
    return digest.hexdigest()


def param_keys(stage: str, model: str | None = None, *, rule: str | None = None) -> list[str]:
    """The dotted params keys the stage reads (or one of its Snakemake rules), :data:`MODEL`
    replaced by ``model`` when given; the stage's :attr:`Stage.targets` keys too, not a rule's."""
    rules = STAGES[stage].rules
    keys = rules[rule] if rule is not None else [*(k for r in rules.values() for k in r), *STAGES[stage].targets]
    return list(dict.fromkeys(model if key == MODEL and model else key for key in keys))


def param_values(params: dict[str, Any], stage: str, model: str | None = None, *,
                 rule: str | None = None) -> dict[str, Any]:
    """``{dotted key: value}`` of :func:`param_keys`, from validated params."""
    values = {}
    for key in param_keys(stage, model, rule=rule):
        value: Any = params
        for part in key.split("."):
            value = value[part]
        values[key] = value
    return values
