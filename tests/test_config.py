"""Tests of soundstage.config: params.yaml validation fails before any work, naming the key.

Each bad case mutates a copy of the repository's own params.yaml and expects a ``ParamsError``
whose ``key`` is the dotted key and whose message starts ``params.yaml: <key>:``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from soundstage.config import SCHEMA_PATH, ParamsError, flatten, load_params, load_schema, validate_params

REPO = Path(__file__).resolve().parents[1]
DELETE = object()


@pytest.fixture(scope="module")
def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def mutated(params: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``params`` with ``{"a.b.c": value}`` set (``DELETE`` removes the key)."""
    out = copy.deepcopy(params)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


def expect_error(params: dict[str, Any], key: str, *fragments: str) -> ParamsError:
    with pytest.raises(ParamsError) as info:
        validate_params(params)
    err = info.value
    assert err.key == key, str(err)
    assert str(err).startswith(f"params.yaml: {key}: "), str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)
    return err


BAD = [
    # unknown keys, at every depth
    ("unknown top-level key", {"sead": 1}, "sead", "did you mean 'seed'"),
    ("unknown section key", {"split.stabel": True}, "split.stabel", "did you mean 'stable'"),
    ("unknown depth-3 key", {"process.filter.cutof": [30.0]}, "process.filter.cutof", "allowed:"),
    ("unknown depth-3 ratio", {"split.ratios.dev": 0.0}, "split.ratios.dev", "unknown key"),
    ("unknown depth-4 key", {"keras_cnn.spec_augment.freq_mask": 2}, "keras_cnn.spec_augment.freq_mask", "unknown key"),
    # wrong types
    ("text for an integer", {"seed": "forty-two"}, "seed", "expected an integer", "'forty-two'"),
    ("boolean for an integer", {"seed": True}, "seed", "expected an integer"),
    ("fraction for an integer", {"features.n_fft": 2048.5}, "features.n_fft", "expected an integer"),
    ("text for a boolean", {"process.mono": "yes"}, "process.mono", "expected true or false"),
    ("text for a number", {"process.trim.top_db": "60 dB"}, "process.trim.top_db", "expected a number"),
    ("scalar for a list", {"train.models": "random_forest"}, "train.models", "expected a list"),
    ("list for a section", {"process": [1, 2]}, "process", "expected a mapping"),
    ("empty section", {"split": None}, "split", "expected a mapping, got null"),
    ("text in a list", {"process.filter.cutoff": ["low"]}, "process.filter.cutoff.0", "expected a number"),
    ("number for text", {"data.name": 7}, "data.name", "expected text"),
    # enums and ranges
    ("unknown layout", {"data.layout": "json"}, "data.layout", "must be one of: folder, csv, regex"),
    ("unknown model", {"train.models": ["svm"]}, "train.models.0", "must be one of"),
    ("unknown normalization", {"process.normalize.method": "lufs"}, "process.normalize.method", "peak"),
    ("negative seed", {"seed": -1}, "seed", "minimum"),
    ("negative bootstrap", {"evaluate.bootstrap": -1}, "evaluate.bootstrap", "minimum"),
    ("fractional bootstrap", {"evaluate.bootstrap": 99.5}, "evaluate.bootstrap", "expected an integer"),
    ("seed beyond 32 bits", {"seed": 2**32}, "seed", "maximum"),
    ("too many shards", {"sharding.n_shards": 1001}, "sharding.n_shards", "1..1000"),
    ("shards neither a count nor auto", {"sharding.n_shards": "many"}, "sharding.n_shards", "'many'", "or auto"),
    ("dropout of 1", {"keras_mlp.dropout": 1.0}, "keras_mlp.dropout", "maximum"),
    ("zero train ratio", {"split.ratios": {"train": 0.0, "val": 0.5, "test": 0.5}}, "split.ratios.train", "0"),
    ("dataset name with a space", {"data.name": "my data"}, "data.name", "does not match"),
    ("bad max_features", {"random_forest.max_features": "auto"}, "random_forest.max_features", "sqrt, log2"),
    ("max_features above 1", {"random_forest.max_features": 1.5}, "random_forest.max_features", "fraction"),
    ("infinite number", {"process.trim.top_db": float("inf")}, "process.trim.top_db", "finite"),
    ("NaN in a list", {"process.filter.cutoff": [float("nan")]}, "process.filter.cutoff.0", "finite"),
    # ratios
    ("ratios sum below 1", {"split.ratios": {"train": 0.7, "val": 0.1, "test": 0.1}}, "split.ratios",
     "must sum to 1 (got 0.9)"),
    ("ratios sum above 1", {"split.ratios": {"train": 0.8, "val": 0.2, "test": 0.2}}, "split.ratios", "sum to 1"),
    ("a ratio missing", {"split.ratios": {"train": 0.8, "val": 0.2}}, "split.ratios.test", "required"),
    # filter and Nyquist (22050 Hz in params.yaml: Nyquist 11025 Hz)
    ("cutoff above Nyquist", {"process.filter.enabled": True, "process.filter.cutoff": [12000.0]},
     "process.filter.cutoff", "at or above Nyquist (11025 Hz"),
    ("cutoff at Nyquist", {"process.filter.enabled": True, "process.filter.kind": "lowpass",
                           "process.filter.cutoff": [11025]}, "process.filter.cutoff", "Nyquist"),
    ("cutoff above Nyquist while off", {"process.filter.cutoff": [20000.0]}, "process.filter.cutoff", "Nyquist"),
    ("cutoff above a lower rate", {"process.sample_rate": 8000, "process.filter.cutoff": [4000.0]},
     "process.filter.cutoff", "4000 Hz is at or above Nyquist (4000 Hz"),
    ("bandpass high edge above Nyquist", {"process.filter.kind": "bandpass", "process.filter.cutoff": [300.0, 12000.0]},
     "process.filter.cutoff", "12000 Hz"),
    ("bandpass decreasing", {"process.filter.kind": "bandpass", "process.filter.cutoff": [3000.0, 300.0]},
     "process.filter.cutoff", "increasing"),
    ("bandpass one edge", {"process.filter.kind": "bandpass", "process.filter.cutoff": [300.0]},
     "process.filter.cutoff", "bandpass"),
    ("lowpass two edges", {"process.filter.kind": "lowpass", "process.filter.cutoff": [300.0, 3000.0]},
     "process.filter.cutoff", "exactly one"),
    ("zero cutoff", {"process.filter.cutoff": [0.0]}, "process.filter.cutoff.0", "minimum"),
    ("three cutoffs", {"process.filter.cutoff": [1.0, 2.0, 3.0]}, "process.filter.cutoff", "too long"),
    # features
    ("fmax above Nyquist", {"features.fmax": 12000.0}, "features.fmax", "above Nyquist"),
    ("fmax below fmin", {"features.fmin": 500.0, "features.fmax": 400.0}, "features.fmax", "features.fmin"),
    ("fmin at Nyquist", {"features.fmin": 11025.0}, "features.fmin", "Nyquist"),
    ("win_length above n_fft", {"features.win_length": 4096}, "features.win_length", "features.n_fft"),
    ("more MFCCs than mels", {"features.n_mfcc": 40, "features.n_mels": 32}, "features.n_mfcc", "features.n_mels"),
    ("CNN without log-mels", {"features.save": ["mfcc"], "train.models": ["keras_cnn"]}, "features.save", "logmel"),
    ("more mels than FFT bins", {"features.n_mels": 300, "features.n_fft": 512}, "features.n_mels",
     "300 mel bands need n_fft // 2 + 1 >= 300", "features.n_fft 512 gives 257", "598"),
    ("more mels than a tiny FFT", {"features.n_fft": 64}, "features.n_mels", "128 mel bands", "gives 33"),
    ("contrast bands above Nyquist at 8 kHz", {"process.sample_rate": 8000, "process.filter.cutoff": [30.0]},
     "features.n_bands", "6 spectral-contrast bands", "6400 Hz", "Nyquist (4000 Hz for process.sample_rate 8000)",
     "features.n_bands <= 5"),
    ("contrast bands checked while contrast is off", {"process.sample_rate": 8000, "features.spectral": ["centroid"]},
     "features.n_bands", "checked even while contrast is off"),
    ("contrast bands at the lowest rate", {"process.sample_rate": 1000, "process.filter.cutoff": [30.0],
                                           "features.n_bands": 3, "features.n_fft": 256, "features.n_mels": 64},
     "features.n_bands", "Nyquist (500 Hz", "features.n_bands <= 2"),
    ("contrast band without an FFT bin", {"features.n_fft": 32, "features.n_mels": 16, "features.n_mfcc": 13},
     "features.n_fft", "band 1 (200-400 Hz) holds none"),
    ("fmax above Nyquist at 8 kHz", {"process.sample_rate": 8000, "features.n_bands": 5, "features.fmax": 4500.0},
     "features.fmax", "above Nyquist (4000 Hz"),
    # rejected share
    ("rejected share above 1", {"data.max_rejected_share": 1.5}, "data.max_rejected_share", "maximum"),
    ("negative rejected share", {"data.max_rejected_share": -0.1}, "data.max_rejected_share", "minimum"),
    ("rejected share as text", {"data.max_rejected_share": "5%"}, "data.max_rejected_share", "expected a number"),
    ("negative min_seconds", {"process.duration.min_seconds": -0.25}, "process.duration.min_seconds", "minimum"),
    ("hop of many windows", {"process.duration.mode": "segment", "process.duration.seconds": 1.0,
                             "process.duration.hop_seconds": 5.0}, "process.duration.hop_seconds", "windows"),
    # data layouts
    ("csv layout without csv.path", {"data.layout": "csv"}, "data.csv.path", "required when data.layout is csv"),
    ("csv columns clash", {"data.layout": "csv", "data.csv.path": "meta.csv", "data.csv.group_column": "label"},
     "data.csv.group_column", "data.csv.label_column"),
    ("regex layout without pattern", {"data.layout": "regex"}, "data.regex.pattern", "required"),
    ("invalid regex", {"data.layout": "regex", "data.regex.pattern": "(?P<label>\\d"}, "data.regex.pattern",
     "invalid regular expression"),
    ("regex without label group", {"data.layout": "regex", "data.regex.pattern": "(?P<digit>\\d)_.*\\.wav"},
     "data.regex.pattern", "(?P<label>...)"),
    ("unused regex still checked", {"data.regex.pattern": "(\\d"}, "data.regex.pattern", "invalid regular expression"),
    ("group_regex without group", {"data.folder.group_regex": "(?P<artist>[a-z]+)"}, "data.folder.group_regex",
     "(?P<group>...)"),
    ("invalid group_regex", {"data.folder.group_regex": "[a-z"}, "data.folder.group_regex", "invalid regular"),
    ("empty group_regex", {"data.folder.group_regex": ""}, "data.folder.group_regex", "non-empty"),
    # process: what ProcessConfig checked itself before params.yaml validation was the one check
    ("unknown trim key", {"process.trim.top_dbb": 50}, "process.trim.top_dbb", "did you mean 'top_db'"),
    ("number for a process section", {"process.trim": 5}, "process.trim", "expected a mapping"),
    ("negative trim top_db", {"process.trim.top_db": -3}, "process.trim.top_db", "minimum"),
    ("text for the trim switch", {"process.trim.enabled": "yes"}, "process.trim.enabled", "expected true or false"),
    ("zero sample rate", {"process.sample_rate": 0}, "process.sample_rate", "minimum"),
    ("text sample rate", {"process.sample_rate": "fast"}, "process.sample_rate", "expected an integer or null"),
    ("unknown filter kind", {"process.filter.kind": "notch"}, "process.filter.kind", "must be one of"),
    ("zero filter order", {"process.filter.order": 0}, "process.filter.order", "minimum"),
    ("fractional filter order", {"process.filter.order": 2.5}, "process.filter.order", "expected an integer"),
    ("NaN target level", {"process.normalize.target_db": float("nan")}, "process.normalize.target_db", "finite"),
    ("unknown duration mode", {"process.duration.mode": "sliding"}, "process.duration.mode", "must be one of"),
    ("unknown short policy", {"process.duration.short": "crop"}, "process.duration.short", "must be one of"),
    ("zero seconds", {"process.duration.seconds": 0}, "process.duration.seconds", "minimum"),
    ("negative hop", {"process.duration.hop_seconds": -1.0}, "process.duration.hop_seconds", "minimum"),
    # features: what FeatureConfig checked itself
    ("unknown features key", {"features.n_fftt": 1024}, "features.n_fftt", "did you mean 'n_fft'"),
    ("zero n_fft", {"features.n_fft": 0}, "features.n_fft", "minimum"),
    ("boolean hop", {"features.hop_length": True}, "features.hop_length", "expected an integer"),
    ("window with a parameter", {"features.window": ["kaiser", 8.0]}, "features.window", "expected text"),
    ("more MFCCs than default mels", {"features.n_mfcc": 200}, "features.n_mfcc", "features.n_mels"),
    ("even delta window", {"features.delta_width": 8}, "features.delta_width", "must be odd"),
    ("rolloff of 1", {"features.roll_percent": 1.0}, "features.roll_percent", "maximum"),
    ("unknown spectral feature", {"features.spectral": ["centroid", "brightness"]}, "features.spectral.1",
     "must be one of"),
    ("unknown summary statistic", {"features.summary": ["mean", "mode"]}, "features.summary.1", "must be one of"),
    ("zero power", {"features.power": 0.0}, "features.power", "minimum"),
    ("negative log-mel range", {"features.top_db": -1.0}, "features.top_db", "minimum"),
    ("text for the mfcc switch", {"features.mfcc": "yes"}, "features.mfcc", "expected true or false"),
    ("number for the chroma switch", {"features.chroma": 1}, "features.chroma", "expected true or false"),
    # split: what split.check_ratios checked itself
    ("negative ratios", {"split.ratios": {"train": 1.2, "val": -0.1, "test": -0.1}}, "split.ratios.test", "minimum"),
    ("NaN ratio", {"split.ratios": {"train": float("nan"), "val": 0.5, "test": 0.5}}, "split.ratios.train", "finite"),
    # split modes given by the data
    ("unknown split mode", {"split.mode": "folds"}, "split.mode",
     "must be one of: ratio, kfold, leave_one_group_out, column, lists"),
    ("one fold", {"split.mode": "kfold", "split.k": 1}, "split.k", "minimum of 2"),
    ("fractional fold count", {"split.k": 2.5}, "split.k", "expected an integer"),
    ("boolean fold count", {"split.k": True}, "split.k", "expected an integer"),
    ("column folds as text", {"split.column.folds": "yes"}, "split.column.folds", "expected true or false"),
    ("column folds with a test rule", {"split.mode": "column", "split.column.name": "fold", "split.column.folds": True,
                                       "split.column.test": [5]}, "split.column.folds",
     "cannot be combined with split.column.test:"),
    ("column folds with a val rule (any mode)", {"split.column.folds": True, "split.column.test": ["5"],
                                                 "split.column.val": ["4"]}, "split.column.folds",
     "split.column.test and split.column.val"),
    ("fold lists with a train list", {"split.mode": "lists", "split.lists.folds": ["f1.txt", "f2.txt"],
                                      "split.lists.train": "t.txt"}, "split.lists.folds",
     "cannot be combined with split.lists.train"),
    ("fold lists with val and test lists", {"split.lists.folds": ["f1.txt", "f2.txt"], "split.lists.val": "v.txt",
                                            "split.lists.test": "t.txt"}, "split.lists.folds",
     "split.lists.val, split.lists.test"),
    ("a single fold list", {"split.mode": "lists", "split.lists.folds": ["f1.txt"]}, "split.lists.folds", "too short"),
    ("a fold list twice", {"split.mode": "lists", "split.lists.folds": ["f1.txt", "f1.txt"]}, "split.lists.folds",
     "non-unique"),
    ("a fold list twice, spelt apart", {"split.mode": "lists", "split.lists.folds": ["f1.txt", "f2.txt", "./f1.txt"]},
     "split.lists.folds.2", "is split.lists.folds.0 already"),
    ("a fold list as text", {"split.lists.folds": "f1.txt"}, "split.lists.folds", "expected a list or null"),
    ("an empty fold list name", {"split.lists.folds": ["f1.txt", ""]}, "split.lists.folds.1", "non-empty"),
    ("column mode without a column", {"split.mode": "column"}, "split.column.name",
     "required when split.mode is column"),
    ("column mode with an empty column name", {"split.mode": "column", "split.column.name": ""}, "split.column.name",
     "non-empty"),
    ("val rule without a test rule", {"split.column.val": ["4"]}, "split.column.val", "needs split.column.test"),
    ("a value in test and val", {"split.column.test": [5], "split.column.val": ["5"]}, "split.column.val",
     "in split.column.test too"),
    ("fractional fold value", {"split.column.test": [5.5]}, "split.column.test.0", "5.5"),
    ("lists mode without a test list", {"split.mode": "lists", "split.lists.train": "train.txt"}, "split.lists.test",
     "required when split.mode is lists"),
    ("lists mode without a train list", {"split.mode": "lists", "split.lists.test": "t.txt"}, "split.lists.train",
     "required when split.mode is lists"),
    ("one file for two lists", {"split.mode": "lists", "split.lists.train": "a.txt", "split.lists.test": "./a.txt"},
     "split.lists.test", "is split.lists.train already"),
    ("unknown list", {"split.lists.dev": "dev.txt"}, "split.lists.dev", "unknown key"),
    ("val share of 1", {"split.val_share": 1.0}, "split.val_share", "maximum"),
    # demo: what make_demo checked itself
    ("one demo class", {"demo.n_classes": 1}, "demo.n_classes", "minimum"),
    ("more demo classes than it has", {"demo.n_classes": 9}, "demo.n_classes", "maximum"),
    ("fractional demo classes", {"demo.n_classes": 2.5}, "demo.n_classes", "expected an integer"),
    ("no demo clips", {"demo.clips_per_class": 0}, "demo.clips_per_class", "minimum"),
    ("negative demo clips", {"demo.clips_per_class": -3}, "demo.clips_per_class", "minimum"),
    ("more demo clips than ids", {"demo.clips_per_class": 4001}, "demo.clips_per_class", "raise demo.n_artists"),
    ("no demo artist", {"demo.n_artists": 0}, "demo.n_artists", "minimum"),
    ("more artists than two digits", {"demo.n_artists": 100}, "demo.n_artists", "maximum"),
    ("zero demo duration", {"demo.duration": 0.0}, "demo.duration", "minimum"),
    ("negative demo duration", {"demo.duration": -1.0}, "demo.duration", "minimum"),
    ("NaN demo duration", {"demo.duration": float("nan")}, "demo.duration", "finite"),
    ("infinite demo duration", {"demo.duration": float("inf")}, "demo.duration", "finite"),
    ("demo rate below 8 kHz", {"demo.sample_rate": 7999}, "demo.sample_rate", "minimum"),
    ("boolean demo rate", {"demo.sample_rate": True}, "demo.sample_rate", "expected an integer"),
    # models and augmentation: what the model functions checked themselves
    ("learning-rate factor of 1", {"keras_mlp.lr_factor": 1.0}, "keras_mlp.lr_factor", "maximum"),
    ("learning-rate factor of 0", {"keras_mlp.lr_factor": 0.0}, "keras_mlp.lr_factor", "minimum"),
    ("no learning-rate patience", {"keras_mlp.lr_patience": 0}, "keras_mlp.lr_patience", "minimum"),
    ("no early-stopping patience", {"keras_mlp.patience": 0}, "keras_mlp.patience", "minimum"),
    ("dropout of 1 in the CNN", {"keras_cnn.dropout": 1.0}, "keras_cnn.dropout", "maximum"),
    ("zero first stride", {"keras_cnn.first_stride": 0}, "keras_cnn.first_stride", "minimum"),
    ("no conv block", {"keras_cnn.filters": []}, "keras_cnn.filters", "should be non-empty"),
    ("zero batch size", {"keras_cnn.batch_size": 0}, "keras_cnn.batch_size", "minimum"),
    ("unknown spec_augment key", {"keras_cnn.spec_augment.freq_maks": 1}, "keras_cnn.spec_augment.freq_maks",
     "did you mean 'freq_masks'"),
    ("decreasing gain range", {"augment.gain_db": [3.0, -3.0]}, "augment.gain_db", "must not decrease"),
    ("one-value noise range", {"augment.noise_snr_db": [15.0]}, "augment.noise_snr_db", "invalid value"),
    ("zero stretch rate", {"augment.time_stretch": [0.0, 1.1]}, "augment.time_stretch", "invalid value"),
    ("no augmented copy", {"augment.copies": 0}, "augment.copies", "minimum"),
]


@pytest.mark.parametrize("changes, key, fragments", [(c, k, f) for _, c, k, *f in BAD], ids=[b[0] for b in BAD])
def test_bad_params_name_the_key(repo_params, changes, key, fragments):
    expect_error(mutated(repo_params, changes), key, *fragments)


def test_several_schema_problems_are_all_listed(repo_params):
    err = expect_error(mutated(repo_params, {"sead": 1, "split.stabel": True, "process.mono": "yes"}), "sead")
    assert "also: process.mono:" in str(err) and "also: split.stabel:" in str(err)


GOOD = [
    ("scalar cutoff", {"process.filter.cutoff": 30}, "process.filter.cutoff", [30]),
    ("YAML 1.1 exponent text", {"keras_mlp.learning_rate": "1e-3"}, "keras_mlp.learning_rate", 0.001),
    ("integral float for an integer", {"features.n_fft": 1024.0}, "features.n_fft", 1024),
    ("integral float rate", {"process.sample_rate": 16000.0}, "process.sample_rate", 16000),
    ("native rate skips Nyquist", {"process.sample_rate": None, "process.filter.cutoff": [30000.0]},
     "process.filter.cutoff", [30000.0]),
    ("cutoff just below Nyquist", {"process.filter.kind": "lowpass", "process.filter.cutoff": [11024.9]},
     "process.filter.cutoff", [11024.9]),
    ("fmax at Nyquist", {"features.fmax": 11025.0}, "features.fmax", 11025.0),
    ("val of zero", {"split.ratios": {"train": 0.8, "val": 0.0, "test": 0.2}}, "split.ratios.val", 0.0),
    ("ratios with rounding", {"split.ratios": {"train": 0.7, "val": 0.2, "test": 0.1}}, "split.ratios.test", 0.1),
    ("one fold as a number", {"split.mode": "column", "split.column.name": "fold", "split.column.test": 5},
     "split.column.test", [5]),
    ("split names in a column", {"split.mode": "column", "split.column.name": "split"}, "split.column.test", None),
    ("lists without val", {"split.mode": "lists", "split.lists.train": "a.txt", "split.lists.test": "b.txt"},
     "split.lists.val", None),
    ("no val carved", {"split.val_share": 0}, "split.val_share", 0),
    ("ten folds", {"split.mode": "kfold", "split.k": 10}, "split.k", 10),
    ("fold count as a float", {"split.mode": "kfold", "split.k": 5.0}, "split.k", 5),
    ("fold count ignored outside kfold", {"split.mode": "column", "split.column.name": "fold", "split.k": 2},
     "split.k", 2),
    ("groups left out", {"split.mode": "leave_one_group_out"}, "split.mode", "leave_one_group_out"),
    ("column values as folds", {"split.mode": "column", "split.column.name": "fold", "split.column.folds": True},
     "split.column.folds", True),
    ("column folds off beside a rule", {"split.column.folds": False, "split.column.test": [5]}, "split.column.test",
     [5]),
    ("fold lists alone", {"split.mode": "lists", "split.lists.folds": ["f1.txt", "f2.txt"]}, "split.lists.folds",
     ["f1.txt", "f2.txt"]),
    ("fold lists outside lists mode", {"split.lists.folds": ["f1.txt", "f2.txt"]}, "split.lists.train", None),
    ("fractional max_features", {"random_forest.max_features": 0.5}, "random_forest.max_features", 0.5),
    ("fraction 1.0 stays a fraction", {"random_forest.max_features": 1.0}, "random_forest.max_features", 1.0),
    ("integer max_features", {"random_forest.max_features": 10}, "random_forest.max_features", 10),
    ("all features", {"random_forest.max_features": None}, "random_forest.max_features", None),
    ("regex layout", {"data.layout": "regex", "data.regex.pattern": r"(?P<label>\d)_(?P<group>[a-z]+)_\d+\.wav"},
     "data.layout", "regex"),
    ("csv layout", {"data.layout": "csv", "data.csv.path": "meta.csv", "data.csv.group_column": "speaker"},
     "data.csv.group_column", "speaker"),
    ("no group regex", {"data.folder.group_regex": None}, "data.folder.group_regex", None),
    ("5 contrast bands at 8 kHz", {"process.sample_rate": 8000, "features.n_bands": 5}, "features.n_bands", 5),
    ("native rate: contrast checked per clip", {"process.sample_rate": None, "features.n_bands": 9},
     "features.n_bands", 9),
    ("mels equal to FFT bins", {"features.n_fft": 256, "features.n_mels": 129, "features.n_mfcc": 20},
     "features.n_mels", 129),
    ("never stop for rejections", {"data.max_rejected_share": 1}, "data.max_rejected_share", 1),
    ("stop on any rejection", {"data.max_rejected_share": 0.0}, "data.max_rejected_share", 0.0),
    ("every demo id used", {"demo.n_artists": 2, "demo.clips_per_class": 2000}, "demo.clips_per_class", 2000),
    ("narrowest delta window", {"features.delta_width": 3}, "features.delta_width", 3),
]


@pytest.mark.parametrize("changes, key, expected", [(c, k, e) for _, c, k, e in GOOD], ids=[g[0] for g in GOOD])
def test_good_params_are_normalized(repo_params, changes, key, expected):
    out = validate_params(mutated(repo_params, changes))
    node = out
    for name in key.split("."):
        node = node[name]
    assert node == expected and type(node) is type(expected)


def test_repository_params_validate():
    p = load_params(REPO / "params.yaml")
    assert p["split"]["ratios"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    # nothing lost by default: every clip with audio is kept, and a run stops past 5 % rejected
    assert p["process"]["duration"]["min_seconds"] == 0 and p["data"]["max_rejected_share"] == 0.05
    assert validate_params(p) == p  # idempotent


def test_validation_does_not_touch_its_input(repo_params):
    before = copy.deepcopy(repo_params)
    partial = {"split": {"stable": True}}
    out = validate_params(partial)
    assert partial == {"split": {"stable": True}} and out["split"]["ratios"]["train"] == 0.7
    validate_params(repo_params)
    assert repo_params == before


def schema_defaults(schema: dict[str, Any]) -> Any:
    if "properties" in schema:
        return {name: schema_defaults(sub) for name, sub in schema["properties"].items()
                if "default" in sub or "properties" in sub}
    return schema.get("default")


def test_defaults_fill_everything():
    schema = load_schema()
    for empty in (None, {}):
        out = validate_params(empty)
        assert set(out) == set(schema["properties"])
        assert out == schema_defaults(schema) | {"split": out["split"]}
        assert out["split"] == {"mode": "ratio", "ratios": {"train": 0.7, "val": 0.15, "test": 0.15}, "stable": False,
                                "k": 5, "column": {"name": None, "test": None, "val": None, "folds": False},
                                "lists": {"train": None, "val": None, "test": None, "folds": None}, "val_share": 0.15}
    out = validate_params({"process": {"filter": {"enabled": True}}})
    assert out["process"]["filter"] == {"enabled": True, "kind": "highpass", "cutoff": [30.0], "order": 4}
    assert out["process"]["trim"] == {"enabled": True, "top_db": 60.0}


def walk(schema: dict[str, Any], path: str = ""):
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}{name}", sub, schema
        yield from walk(sub, f"{path}{name}.")


def test_schema_documents_every_key():
    """Every key has a default (but the ratios, which are required together), every section
    refuses unknown keys, and the package copy of the schema is the workflow's."""
    schema = load_schema()
    assert schema.get("additionalProperties") is False
    for dotted, sub, parent in walk(schema):
        required = dotted.rsplit(".", 1)[-1] in parent.get("required", [])
        assert "default" in sub or required, f"{dotted} has no default"
        if "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{dotted} accepts unknown keys"
    assert SCHEMA_PATH.resolve() == (REPO / "workflow" / "schemas" / "params.schema.yaml").resolve()


def test_schema_defaults_are_valid_values():
    """Each default passes its own sub-schema (a typo in a default would surface only in use)."""
    import jsonschema

    for _dotted, sub, _ in walk(load_schema()):
        if "default" in sub:
            jsonschema.Draft202012Validator(sub).validate(sub["default"])


def test_params_error_format():
    err = ParamsError("split.ratios", "must sum to 1")
    assert err.key == "split.ratios" and str(err) == "params.yaml: split.ratios: must sum to 1"
    assert isinstance(err, ValueError)
    assert str(ParamsError("", "file not found: x")) == "params.yaml: file not found: x"


# --- load_params ---------------------------------------------------------------------------------

def test_load_params_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text, match", [
    ("seed: [1, 2\n", "not valid YAML"),
    ("split:\n  stable: true\n   ratios: {}\n", "not valid YAML"),
    ("seed: 1\nsplit: {stable: true}\nseed: 2\n", "key 'seed' is given twice"),
    ("- seed\n- 42\n", "must hold a mapping"),
    ("just text\n", "must hold a mapping"),
])
def test_load_params_bad_files(tmp_path, text, match):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError, match=match):
        load_params(path)


def test_load_params_directory_and_empty_file(tmp_path):
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path)
    (tmp_path / "params.yaml").write_text("# everything default\n", encoding="utf-8")
    assert load_params(tmp_path / "params.yaml") == validate_params({})


def test_load_params_validates(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  ratios: {train: 0.7, val: 0.2, test: 0.2}\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"^params.yaml: split.ratios: train \+ val \+ test must sum to 1"):
        load_params(path)



def test_load_params_passes_on_what_it_validated(tmp_path, monkeypatch):
    """Snakemake's main process validates once (pass_on); its jobs reuse that while the file is unchanged."""
    import subprocess
    import sys

    from soundstage import config

    monkeypatch.setenv(config.VALIDATED_ENV, "")  # restored (unset) after the test
    path = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    validated = load_params(path)
    assert os.environ[config.VALIDATED_ENV] == ""  # only with pass_on
    assert load_params(path, pass_on=True) == validated
    assert json.loads(os.environ[config.VALIDATED_ENV])["params"] == validated

    def refuse(params):
        raise AssertionError("validated again")

    # A job (here: this process with validation disabled, and a real child process) gets the same dict.
    monkeypatch.setattr(config, "validate_params", refuse)
    assert load_params(path) == validated
    child = subprocess.run([sys.executable, "-c", "import json, sys; from soundstage import config; "
                            "config.validate_params = None; print(json.dumps(config.load_params(sys.argv[1])))",
                            str(path)], capture_output=True, text=True, check=True)
    assert json.loads(child.stdout) == validated
    # Any other content is validated again.
    path.write_text(text.replace("seed: 42", "seed: 7"), encoding="utf-8")
    with pytest.raises(AssertionError, match="validated again"):
        load_params(path)


@pytest.mark.parametrize("blob", ["", "not json", "[1, 2]", '{"key": "0", "params": {}}', '{"params": {"seed": 1}}'])
def test_load_params_ignores_a_stale_or_garbled_hand_over(tmp_path, monkeypatch, blob):
    from soundstage import config

    monkeypatch.setenv(config.VALIDATED_ENV, blob)
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  ratios: {train: 0.7, val: 0.2, test: 0.2}\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="split.ratios"):
        load_params(path)
    path.write_text("seed: 3\n", encoding="utf-8")
    assert load_params(path) == validate_params({"seed": 3})

def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "1,2", "d": None}


# --- the CLI stops before any work -----------------------------------------------------------------

@pytest.mark.parametrize("changes, key", [
    ({"split.bogus": 1}, "split.bogus"),
    ({"split.ratios": {"train": 0.5, "val": 0.2, "test": 0.2}}, "split.ratios"),
    ({"process.filter.enabled": True, "process.filter.cutoff": [11025.0]}, "process.filter.cutoff"),
    ({"data.layout": "regex", "data.regex.pattern": "(?P<digit>\\d)"}, "data.regex.pattern"),
])
def test_cli_exits_2_naming_the_key(tmp_path, capsys, repo_params, changes, key):
    from soundstage.cli import main

    bad = tmp_path / "bad-params.yaml"
    bad.write_text(yaml.safe_dump(mutated(repo_params, changes)), encoding="utf-8")
    shard = tmp_path / "000.csv"
    shard.write_text("id,clip_id,label,group\na,a,x,\n", encoding="utf-8")
    out_dir = tmp_path / "split"
    code = main(["--params", str(bad), "split", str(shard), "--out-dir", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"params.yaml: {key}:" in err
    assert not out_dir.exists()  # nothing was written


def test_cli_missing_params_file(tmp_path, capsys):
    from soundstage.cli import main

    assert main(["--params", str(tmp_path / "absent.yaml"), "split", "x.csv"]) == 2
    assert "file not found" in capsys.readouterr().err
