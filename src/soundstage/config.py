"""Load and validate ``params.yaml``: the single source of truth for every tunable.

Validation happens in one place, here, against ``workflow/schemas/params.schema.yaml`` (JSON Schema
written in YAML) plus the checks a schema cannot express (ratios summing to 1, what each split mode
needs, filter cutoffs, ``features.fmax`` and the spectral-contrast bands below Nyquist, mel bands that
the FFT can fill, an odd delta window, demo clip ids that fit their digits, regexes that compile and
name the right groups). Every error names the dotted key. The config dataclasses built from validated params
(:class:`soundstage.dsp.ProcessConfig`, :class:`soundstage.features_core.FeatureConfig`) check
nothing again. Library functions never read params themselves: the CLI passes explicit keyword
arguments.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Hashable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")
#: How a process that validated a params file hands the result to the processes it starts
#: (Snakemake's jobs): ``{"key": ..., "params": ...}``, used while the file, the schema and this
#: module are byte for byte what was validated (each job then skips ~0.06 s of parsing and jsonschema).
VALIDATED_ENV = "SOUNDSTAGE_VALIDATED_PARAMS"
# libyaml's parser when PyYAML has it: every job reads the params and the schema (~0.15 s in Python).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ParamsError(ValueError):
    """A ``params.yaml`` problem; the message starts with the offending dotted key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.problem = message  # without the "params.yaml: <key>: " prefix
        super().__init__(f"params.yaml: {key}: {message}" if key else f"params.yaml: {message}")


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_SafeLoader)  # noqa: S506 (a SafeLoader)


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


# Plain decimal or scientific notation. PyYAML (YAML 1.1) reads ``1e-3`` (no dot) as text while
# YAML 1.2 and every user read it as 0.001, so such text is taken as the number it spells.
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _types(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """Normalize what YAML gives before validation: numeric text where only numbers are allowed
    becomes a number, an integral float where an integer is wanted (``2048.0``) becomes an int, and a
    single number where a list of numbers is allowed (``cutoff: 30``) becomes a one-item list."""
    types = _types(schema)
    if isinstance(value, dict) and "properties" in schema:
        return {k: _coerce(v, schema["properties"][k]) if k in schema["properties"] else v
                for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_coerce(v, schema["items"]) for v in value]
    numeric = types & {"number", "integer"}
    if isinstance(value, str) and numeric and "string" not in types and _NUMBER_TEXT.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, float) and "integer" in types and "number" not in types and value.is_integer():
        value = int(value)
    if "array" in types and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [_coerce(value, schema.get("items", {}))]
    return value


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return f"a list {value!r}" if len(repr(value)) < 60 else "a list"
    return repr(value)


_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "text", "number": "a number",
               "integer": "an integer", "boolean": "true or false", "null": "null"}


def _message(err: Any) -> tuple[str, str]:
    """``(dotted key, message)`` of one jsonschema error, phrased for a person editing YAML."""
    path = list(err.absolute_path)
    key = _dotted(path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted((k for k in err.instance if k not in allowed), key=str)
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return _dotted([*path, unknown[0]]), f"unknown key ({hint}allowed: {', '.join(allowed)})"
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        if missing:
            return _dotted([*path, missing[0]]), "required key is missing"
    if err.validator == "type":
        wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted)
        return key, f"expected {words}, got {_describe(err.instance)}"
    if err.validator == "enum":
        choices = ", ".join("null" if c is None else str(c) for c in err.validator_value)
        return key, f"must be one of: {choices} (got {_describe(err.instance)})"
    if err.validator in {"anyOf", "oneOf"}:
        what = err.schema.get("description")
        return key, f"invalid value {_describe(err.instance)}" + (f": {what}" if what else "")
    return key, err.message


def validate_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``params`` and return a deep copy with defaults filled in.

    Raises
    ------
    ParamsError
        Naming the dotted key of the first problem found (schema problems before cross-key
        checks; shallower keys first); further schema problems are listed after it.
    """
    import jsonschema

    if params is not None and not isinstance(params, Mapping):
        raise ParamsError("", f"expected a mapping of keys, got {_describe(params)}")
    schema = load_schema()
    data = _coerce(copy.deepcopy(dict(params or {})), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)), str(e.validator)))
    if errors:
        found = [_message(e) for e in errors]
        key, message = found[0]
        more = [f"{k}: {m}" for k, m in dict(found[1:]).items() if k != key]
        if more:
            message += "\n  also: " + "\n  also: ".join(more[:5]) + (" ..." if len(more) > 5 else "")
        raise ParamsError(key, message)
    bad = _non_finite(data, [])
    if bad is not None:
        raise ParamsError(_dotted(bad), "must be a finite number")
    data = _fill_defaults(data, schema)
    _semantic_checks(data)
    return data


def _non_finite(value: Any, path: list[Any]) -> list[Any] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, [*path, k])
        if found is not None:
            return found
    return None


def _semantic_checks(p: dict[str, Any]) -> None:
    """Checks across keys that the schema cannot express. Each runs whether or not its feature is
    switched on, so that switching it on later (``dvc exp run -S process.filter.enabled=true``)
    cannot fail halfway through a run."""
    ratios = p["split"]["ratios"]
    total = ratios["train"] + ratios["val"] + ratios["test"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ParamsError("split.ratios", f"train + val + test must sum to 1 (got {total:g})")
    _check_split_modes(p["split"])

    rate = p["process"]["sample_rate"]  # None: the native rate of each file, unknown here
    nyquist = rate / 2 if rate is not None else None
    flt = p["process"]["filter"]
    cutoff = flt["cutoff"]
    if flt["kind"] == "bandpass" and (len(cutoff) != 2 or cutoff[0] >= cutoff[1]):
        raise ParamsError("process.filter.cutoff",
                          f"bandpass needs two increasing cutoffs [low, high] in Hz, got {cutoff}")
    if flt["kind"] != "bandpass" and len(cutoff) != 1:
        raise ParamsError("process.filter.cutoff", f"{flt['kind']} needs exactly one cutoff in Hz, got {cutoff}")
    if nyquist is not None and max(cutoff) >= nyquist:
        raise ParamsError("process.filter.cutoff", f"{max(cutoff):g} Hz is at or above Nyquist ({nyquist:g} Hz "
                                                   f"for process.sample_rate {rate})")

    dur = p["process"]["duration"]
    if dur["mode"] == "segment" and dur["hop_seconds"] > dur["seconds"] * 4:
        raise ParamsError("process.duration.hop_seconds", "hop is more than 4 windows: most audio would be skipped")

    feats = p["features"]
    if feats["delta_width"] % 2 == 0:
        raise ParamsError("features.delta_width", f"must be odd (centred on its frame), got {feats['delta_width']}")
    if feats["win_length"] is not None and feats["win_length"] > feats["n_fft"]:
        raise ParamsError("features.win_length",
                          f"{feats['win_length']} must not exceed features.n_fft ({feats['n_fft']})")
    if feats["n_mfcc"] > feats["n_mels"]:
        raise ParamsError("features.n_mfcc", f"{feats['n_mfcc']} must not exceed features.n_mels ({feats['n_mels']})")
    n_bins = feats["n_fft"] // 2 + 1
    if feats["n_mels"] > n_bins:  # more bands than FFT bins: some mel filters are always empty
        raise ParamsError("features.n_mels", f"{feats['n_mels']} mel bands need n_fft // 2 + 1 >= {feats['n_mels']} "
                                             f"FFT bins, but features.n_fft {feats['n_fft']} gives {n_bins}: lower "
                                             f"features.n_mels or raise features.n_fft to {2 * (feats['n_mels'] - 1)}")
    if rate is not None:
        _check_contrast_bands(feats["n_bands"], n_fft=feats["n_fft"], rate=rate)
    if nyquist is not None and feats["fmax"] is not None and feats["fmax"] > nyquist:
        raise ParamsError("features.fmax", f"{feats['fmax']:g} Hz is above Nyquist ({nyquist:g} Hz "
                                           f"for process.sample_rate {rate})")
    if feats["fmax"] is not None and feats["fmax"] <= feats["fmin"]:
        raise ParamsError("features.fmax",
                          f"{feats['fmax']:g} Hz must be greater than features.fmin ({feats['fmin']:g} Hz)")
    if nyquist is not None and feats["fmin"] >= nyquist:
        raise ParamsError("features.fmin", f"{feats['fmin']:g} Hz is at or above Nyquist ({nyquist:g} Hz "
                                           f"for process.sample_rate {rate})")
    if "logmel" not in feats["save"] and "keras_cnn" in p["train"]["models"]:
        raise ParamsError("features.save", "keras_cnn trains on log-mels: keep 'logmel' in features.save")

    cnn = p["keras_cnn"]
    if cnn["hop_frames"] is not None and cnn["crop_frames"] != "auto" and cnn["hop_frames"] > cnn["crop_frames"]:
        # with auto the hop is lowered to the crop at training (models.fit_keras_cnn)
        raise ParamsError("keras_cnn.hop_frames", f"{cnn['hop_frames']} must not exceed keras_cnn.crop_frames "
                                                  f"({cnn['crop_frames']}): sliding crops would skip frames")

    for key in ("noise_snr_db", "time_stretch", "pitch_shift", "gain_db"):
        bounds = p["augment"][key]
        if bounds is not None and bounds[0] > bounds[1]:
            raise ParamsError(f"augment.{key}", f"[low, high] must not decrease, got {bounds}")

    demo = p["demo"]
    if demo["clips_per_class"] > _MAX_DEMO_CLIPS_PER_ARTIST * demo["n_artists"]:
        raise ParamsError("demo.clips_per_class", f"{demo['clips_per_class']} clips over {demo['n_artists']} artist(s) "
                                                  f"need more than the {_MAX_DEMO_CLIPS_PER_ARTIST} clip numbers per "
                                                  "artist that a demo id holds: raise demo.n_artists")

    serve = p["serve"]
    if serve["hop_seconds"] > serve["window_seconds"]:  # a hop past the window would skip audio
        raise ParamsError("serve.hop_seconds", f"{serve['hop_seconds']:g} s must not exceed serve.window_seconds "
                                               f"({serve['window_seconds']:g} s): audio between windows would be "
                                               "skipped")

    data = p["data"]
    if data["layout"] == "csv" and not data["csv"]["path"]:
        raise ParamsError("data.csv.path", "required when data.layout is csv")
    if data["layout"] == "csv":
        columns = [(k, data["csv"][k]) for k in ("path_column", "label_column", "group_column", "transcript_column")
                   if data["csv"][k] is not None]
        for i, (k, col) in enumerate(columns):
            earlier = [k2 for k2, c2 in columns[:i] if c2 == col]
            if earlier:
                raise ParamsError(f"data.csv.{k}", f"column {col!r} is already data.csv.{earlier[0]}")
    if data["layout"] == "regex" or data["regex"]["pattern"] is not None:
        _check_regex("data.regex.pattern", data["regex"]["pattern"], required=("label",))
    if data["folder"]["group_regex"] is not None:
        _check_regex("data.folder.group_regex", data["folder"]["group_regex"], required=("group",))


def _check_split_modes(split: Mapping[str, Any]) -> None:
    """What split.mode column and lists need (their rules are checked whatever the mode; split.k only
    matters in kfold mode and the schema bounds it)."""
    column, lists = split["column"], split["lists"]
    if split["mode"] == "column" and not column["name"]:
        raise ParamsError("split.column.name", "required when split.mode is column: the manifest column holding each "
                                               "clip's split or fold (e.g. fold, or take for a data.regex group)")
    if column["val"] is not None and column["test"] is None:
        raise ParamsError("split.column.val", "needs split.column.test (without a test rule the column's values are "
                                              "split names themselves)")
    if column["folds"] and (column["test"] is not None or column["val"] is not None):
        rule = " and ".join(f"split.column.{k}" for k in ("test", "val") if column[k] is not None)
        raise ParamsError("split.column.folds", f"true cannot be combined with {rule}: with folds every value of "
                                                "the column is a fold (set folds: false to keep the rule)")
    both = {str(v).strip() for v in column["test"] or ()} & {str(v).strip() for v in column["val"] or ()}
    if both:
        raise ParamsError("split.column.val", f"value(s) {sorted(both)} are in split.column.test too")
    if lists["folds"]:
        given = [f"split.lists.{k}" for k in ("train", "val", "test") if lists[k]]
        if given:
            raise ParamsError("split.lists.folds", f"cannot be combined with {', '.join(given)}: each fold list "
                                                   "holds one fold's test clips (give either folds or the split lists)")
        for i, path in enumerate(lists["folds"]):
            earlier = [j for j, q in enumerate(lists["folds"][:i]) if Path(q) == Path(path)]
            if earlier:
                raise ParamsError(f"split.lists.folds.{i}", f"{path!r} is split.lists.folds.{earlier[0]} already")
    elif split["mode"] == "lists":
        for key in ("train", "test"):
            if not lists[key]:
                raise ParamsError(f"split.lists.{key}", "required when split.mode is lists (unless split.lists.folds "
                                                        "is given): a text file with one clip id or file path per line")
    given = [(k, lists[k]) for k in ("train", "val", "test") if lists[k]]
    for i, (key, path) in enumerate(given):
        earlier = [k for k, q in given[:i] if Path(q) == Path(path)]
        if earlier:
            raise ParamsError(f"split.lists.{key}", f"{path!r} is split.lists.{earlier[0]} already")


#: Clips per demo artist: the three digits of the clip number in a demo id (``soundstage.demo.ID_PATTERN``).
_MAX_DEMO_CLIPS_PER_ARTIST = 1000

#: Lower edge (Hz) of the first spectral-contrast octave band (librosa's ``fmin``, features_core's too).
CONTRAST_FMIN = 200.0


def _check_contrast_bands(n_bands: int, *, n_fft: int, rate: int) -> None:
    """Spectral contrast splits ``0..Nyquist`` at ``200 * 2**k`` Hz, k < n_bands: the top split must
    lie below Nyquist and each band must hold an FFT bin (checked even while contrast is off, so
    that switching it on cannot fail every features job)."""
    nyquist = rate / 2
    edges = [0.0] + [CONTRAST_FMIN * 2.0**k for k in range(n_bands + 1)]
    if edges[-2] >= nyquist:
        # process.sample_rate >= 1000 Hz (schema): one band (split at 200 Hz) always fits
        fits = max(n for n in range(1, n_bands) if CONTRAST_FMIN * 2.0 ** (n - 1) < nyquist)
        raise ParamsError("features.n_bands", f"{n_bands} spectral-contrast bands split at up to {edges[-2]:g} Hz, "
                                              f"at or above Nyquist ({nyquist:g} Hz for process.sample_rate {rate}): "
                                              f"use features.n_bands <= {fits} (checked even while contrast is off)")
    step = nyquist / (n_fft // 2)  # FFT bin spacing, as numpy.linspace(0, nyquist, n_fft // 2 + 1) spaces them
    for k, (low, high) in enumerate(itertools.pairwise(edges)):
        if not any(low <= j * step <= high for j in range(n_fft // 2 + 1)):
            raise ParamsError("features.n_fft", f"{n_fft} gives FFT bins {step:g} Hz apart at process.sample_rate "
                                                f"{rate}: spectral-contrast band {k} ({low:g}-{high:g} Hz) holds none; "
                                                "raise features.n_fft or lower features.n_bands")


def _check_regex(key: str, pattern: str | None, *, required: tuple[str, ...]) -> None:
    if not pattern:
        raise ParamsError(key, "required when data.layout is regex" if key == "data.regex.pattern"
                          else "must be a non-empty regular expression or null")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ParamsError(key, f"invalid regular expression: {exc}") from None
    missing = [g for g in required if g not in compiled.groupindex]
    if missing:
        raise ParamsError(key, "needs named group(s) " + ", ".join(f"(?P<{g}>...)" for g in missing))


class _UniqueKeyLoader(_SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # let construct_mapping report it
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_params(path: str | Path = "params.yaml", *, pass_on: bool = False) -> dict[str, Any]:
    """Read, validate and default-fill a params file.

    With ``pass_on``, the processes started from here inherit the result (:data:`VALIDATED_ENV`):
    their own ``load_params`` of the same unchanged file returns it without validating again.

    Raises
    ------
    ParamsError
        For a missing or unreadable file, invalid YAML (including a key given twice), a document
        that is not a mapping, or any problem :func:`validate_params` finds.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ParamsError("", f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError("", f"cannot read {path}: {exc}") from None
    key = _validated_key(data)
    inherited = _inherited_params(key)
    if inherited is not None:
        return inherited
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ParamsError("", f"{path} is not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError("", f"{path} must hold a mapping of keys, not {_describe(raw)}")
    params = validate_params(raw)
    if pass_on:
        blob = json.dumps({"key": key, "params": params})
        if json.loads(blob)["params"] == params:  # only what JSON carries unchanged
            os.environ[VALIDATED_ENV] = blob
    return params


def _validated_key(data: bytes) -> str:
    """What a validation result depends on: the params file's bytes, the schema's and this module's."""
    digest = hashlib.sha256(data)
    for source in (SCHEMA_PATH, Path(__file__)):
        digest.update(b"\0" + source.read_bytes())
    return digest.hexdigest()


def _inherited_params(key: str) -> dict[str, Any] | None:
    """The params a parent process validated (:data:`VALIDATED_ENV`) if their ``key`` is ``key``."""
    try:
        passed = json.loads(os.environ.get(VALIDATED_ENV) or "null")
    except ValueError:
        return None
    if isinstance(passed, dict) and passed.get("key") == key and isinstance(passed.get("params"), dict):
        return passed["params"]
    return None


def augment_params(params: Mapping[str, Any], model: str) -> dict[str, Any] | None:
    """``params.yaml: augment`` when waveform augmentation applies to ``model``, else ``None``."""
    aug = params["augment"]
    return dict(aug) if aug["enabled"] and model in aug["models"] else None


def model_params(params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """Every param that shapes a trained ``model``, flattened (:func:`flatten`): what its MLflow run
    records and what its metrics' ``params_hash`` hashes."""
    sections = {"seed": params["seed"], "data": {"name": params["data"]["name"], "root": params["data"]["root"]},
                "process": params["process"], "features": params["features"], "split": params["split"],
                model: params[model], "augment": augment_params(params, model) or {"enabled": False}}
    return flatten(sections)


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
