"""Load and validate ``params.yaml``: the single source of truth for every tunable.

Validation happens in one place, here, against ``workflow/schemas/params.schema.yaml`` (JSON Schema
written in YAML) plus the checks a schema cannot express (ratios summing to 1, filter cutoffs below
Nyquist, regexes that compile and name the right groups). Every error names the dotted key.
Library functions never read params themselves: the CLI passes explicit keyword arguments.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")


class ParamsError(ValueError):
    """A ``params.yaml`` problem; the message starts with the offending dotted key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"params.yaml: {key}: {message}" if key else f"params.yaml: {message}")


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _fill_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Recursively insert schema defaults for missing object properties."""
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _fill_defaults(value[name], sub)
    return value


def _dotted(path: Any) -> str:
    return ".".join(str(p) for p in path)


def validate_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``params`` and return a deep copy with defaults filled in.

    Raises
    ------
    ParamsError
        Naming the dotted key of the first problem found.
    """
    import jsonschema

    data = copy.deepcopy(dict(params or {}))
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        key = _dotted(err.absolute_path)
        if err.validator == "additionalProperties":
            unknown = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            key = _dotted([*err.absolute_path, unknown[0]]) if unknown else key
            raise ParamsError(key, "unknown key (allowed: " + ", ".join(sorted(err.schema.get("properties", {}))) + ")")
        raise ParamsError(key, err.message)
    data = _fill_defaults(data, schema)
    _semantic_checks(data)
    return data


def _semantic_checks(p: dict[str, Any]) -> None:
    ratios = p["split"]["ratios"]
    total = ratios["train"] + ratios["val"] + ratios["test"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ParamsError("split.ratios", f"train + val + test must sum to 1 (got {total:g})")

    flt = p["process"]["filter"]
    if flt["enabled"]:
        cutoff = flt["cutoff"]
        if flt["kind"] == "bandpass" and (len(cutoff) != 2 or cutoff[0] >= cutoff[1]):
            raise ParamsError("process.filter.cutoff", "bandpass needs two increasing cutoffs [low, high]")
        if flt["kind"] != "bandpass" and len(cutoff) != 1:
            raise ParamsError("process.filter.cutoff", f"{flt['kind']} needs exactly one cutoff")
        rate = p["process"]["sample_rate"]
        if rate is not None and max(cutoff) >= rate / 2:
            raise ParamsError("process.filter.cutoff", f"{max(cutoff):g} Hz is at or above Nyquist ({rate / 2:g} Hz)")

    dur = p["process"]["duration"]
    if dur["mode"] == "segment" and dur["hop_seconds"] > dur["seconds"] * 4:
        raise ParamsError("process.duration.hop_seconds", "hop is more than 4 windows: most audio would be skipped")

    feats = p["features"]
    if feats["win_length"] is not None and feats["win_length"] > feats["n_fft"]:
        raise ParamsError("features.win_length", "must not exceed features.n_fft")
    rate = p["process"]["sample_rate"]
    if feats["fmax"] is not None and rate is not None and feats["fmax"] > rate / 2:
        raise ParamsError("features.fmax", f"{feats['fmax']:g} Hz is above Nyquist ({rate / 2:g} Hz)")
    if feats["fmax"] is not None and feats["fmax"] <= feats["fmin"]:
        raise ParamsError("features.fmax", "must be greater than features.fmin")
    if "logmel" not in feats["save"] and "keras_cnn" in p["train"]["models"]:
        raise ParamsError("features.save", "keras_cnn trains on log-mels: keep 'logmel' in features.save")

    data = p["data"]
    if data["layout"] == "csv" and not data["csv"]["path"]:
        raise ParamsError("data.csv.path", "required when data.layout is csv")
    if data["layout"] == "regex":
        _check_regex("data.regex.pattern", data["regex"]["pattern"], required=("label",))
    if data["folder"]["group_regex"] is not None:
        _check_regex("data.folder.group_regex", data["folder"]["group_regex"], required=("group",))


def _check_regex(key: str, pattern: str | None, *, required: tuple[str, ...]) -> None:
    if not pattern:
        raise ParamsError(key, "required for this layout")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ParamsError(key, f"invalid regular expression: {exc}") from None
    missing = [g for g in required if g not in compiled.groupindex]
    if missing:
        raise ParamsError(key, "needs named group(s) " + ", ".join(f"(?P<{g}>...)" for g in missing))


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read, validate and default-fill a params file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ParamsError("", f"file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ParamsError("", f"{path} is not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError("", f"{path} must hold a mapping of keys")
    return validate_params(raw)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested params into dotted keys (for MLflow); lists become comma-joined strings."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(map(str, value))
        else:
            out[name] = value
    return out
