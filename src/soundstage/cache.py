"""Per-shard result caches, so that re-running a shard recomputes only the clips that changed.

Snakemake deletes a job's declared outputs before running it, and DVC deletes outs that are not
``persist: true``; a shard's cache therefore lives beside its outputs (``<stage>/cache/``), written
by the stage after its per-clip files. A clip's cached rows are reused when their *key* (a hash of
the clip's input identity and of every parameter and module that shapes its outputs) is unchanged
and each of its files is still the very version the cache recorded (its :func:`soundstage.io.stamp`,
size and modification time): a file rewritten since, by a run killed half-way through a shard under
other parameters, by another shard after ``n_shards`` changed, or by hand, is computed again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from soundstage.io import file_stamp


def key_of(*parts: Any) -> str:
    """A stable hash of JSON-serializable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def stamps(paths: Iterable[str | Path]) -> str | None:
    """The :func:`soundstage.io.stamp` of each file, joined by ``;``; ``None`` if one is missing."""
    found = []
    for path in paths:
        s = file_stamp(path)
        if s is None:
            return None
        found.append(s)
    return ";".join(found)


def code_version(*modules: str) -> str:
    """Hash of the source of the given modules: cached results die with the code that made them."""
    import importlib.util

    digest = hashlib.sha1()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(name)
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()
