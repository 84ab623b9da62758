"""Per-shard result caches, so that re-running a shard recomputes only the clips that changed.

Snakemake deletes a job's declared outputs before running it, and DVC deletes outs that are not
``persist: true``; a shard's cache therefore lives beside its outputs (``<stage>/cache/``) as a hard
link (or copy) of the shard's table. A clip's rows are reused when its *key* (a hash of its input
identity and of every parameter that shapes its outputs) is unchanged and its files still exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any


def key_of(*parts: Any) -> str:
    """A stable hash of JSON-serializable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def keep(src: str | Path, cache_file: str | Path) -> None:
    """Mirror a finished shard output into the cache (hard link when possible)."""
    src, cache_file = Path(src), Path(cache_file)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f".{cache_file.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, cache_file)


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
