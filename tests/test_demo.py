"""Tests of the synthetic demo dataset (``soundstage.demo``)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from soundstage.config import load_schema, validate_params
from soundstage.demo import CLASS_NAMES, ID_PATTERN, make_demo

# Small enough to keep the whole file at a few seconds.
SMALL = {"n_classes": 6, "clips_per_class": 3, "n_artists": 2, "duration": 1.5, "sample_rate": 16000, "seed": 7}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("demo")
    return out, make_demo(out_dir=out, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _spectral_centroid(y: np.ndarray, sr: int, n_fft: int = 1024, hop: int = 512) -> float:
    """Mean spectral centroid in Hz, magnitude-weighted, over Hann-windowed frames."""
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=1))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    return float(np.mean(mag @ freqs / (mag.sum(axis=1) + 1e-12)))


def test_layout_ids_and_table(small: tuple[Path, pd.DataFrame]) -> None:
    out, table = small
    labels = list(CLASS_NAMES[: SMALL["n_classes"]])
    assert sorted(p.name for p in out.iterdir()) == sorted(labels)  # class folders only, no stray files
    assert list(table.columns) == ["id", "path", "label", "group"]
    assert len(table) == SMALL["n_classes"] * SMALL["clips_per_class"]
    assert table["id"].is_unique
    # Clip k goes to artist k % n_artists, numbered k // n_artists within the artist.
    assert sorted(table.loc[table["label"] == "techno", "id"]) == ["techno.00.000", "techno.00.001", "techno.01.000"]
    for label in labels:
        files = sorted(p.name for p in (out / label).iterdir())
        assert files == sorted(f"{i}.wav" for i in table.loc[table["label"] == label, "id"])
    for row in table.itertuples():
        path = Path(row.path)
        assert path.is_absolute() and path == out / row.label / f"{row.id}.wav"
        info = sf.info(path)
        assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
        assert info.samplerate == SMALL["sample_rate"]
        assert info.frames == round(SMALL["duration"] * SMALL["sample_rate"])


def test_ids_match_group_regex(small: tuple[Path, pd.DataFrame]) -> None:
    _, table = small
    rx = re.compile(ID_PATTERN)
    for row in table.itertuples():
        m = rx.match(row.id)
        assert m is not None, row.id
        assert m.group("label") == row.label
        assert m.group("group") == row.group
    assert set(table["group"]) == {f"{a:02d}" for a in range(SMALL["n_artists"])}
    # The folder layout plus file stem is what ingest's group_regex sees.
    assert all(re.fullmatch(r"[a-z_]+/[a-z_]+\.(?P<group>\d{2})\.\d{3}", f"{r.label}/{r.id}")
               for r in table.itertuples())


def test_same_arguments_give_identical_bytes(small: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, table = small
    again = make_demo(out_dir=tmp_path, **SMALL)
    assert _files(tmp_path) == _files(out)
    pd.testing.assert_frame_equal(again.drop(columns="path"), table.drop(columns="path"))


def test_more_clips_keep_existing_clips(small: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, _ = small
    bigger = make_demo(out_dir=tmp_path, **{**SMALL, "clips_per_class": 5})
    assert len(bigger) == SMALL["n_classes"] * 5
    old, new = _files(out), _files(tmp_path)
    assert set(old) < set(new)
    assert all(new[name] == data for name, data in old.items())


def test_other_seed_gives_other_audio(small: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, _ = small
    make_demo(out_dir=tmp_path, **{**SMALL, "n_classes": 2, "clips_per_class": 1, "seed": 8})
    other = _files(tmp_path)
    assert other and all(other[name] != _files(out)[name] for name in other)


def test_audio_is_finite_normalized_and_varied(small: tuple[Path, pd.DataFrame]) -> None:
    _, table = small
    centroids: dict[str, list[float]] = {}
    for row in table.itertuples():
        y, sr = sf.read(row.path)
        assert np.all(np.isfinite(y))
        peak_db = 20 * math.log10(np.max(np.abs(y)))
        assert -6.0 < peak_db < -0.9  # about -3 dBFS, a few dB either way, never clipping
        assert np.std(y) > 1e-3
        centroids.setdefault(row.label, []).append(_spectral_centroid(y, sr))
    # Clips of one class are not copies of each other.
    for label, values in centroids.items():
        assert len(set(np.round(values, 3))) == len(values), label
    # Classes differ: the brightest class is clearly brighter than the darkest one.
    means = {label: float(np.mean(v)) for label, v in centroids.items()}
    assert max(means.values()) > 1.5 * min(means.values()), means


def test_every_class_renders_at_the_lowest_rate(tmp_path: Path) -> None:
    table = make_demo(out_dir=tmp_path, n_classes=len(CLASS_NAMES), clips_per_class=2, n_artists=1,
                      duration=0.5, sample_rate=8000, seed=0)
    assert sorted(table["label"].unique()) == sorted(CLASS_NAMES)
    for path in table["path"]:
        y, _ = sf.read(path)
        assert len(y) == 4000 and np.all(np.isfinite(y)) and 0.3 < np.max(np.abs(y)) < 0.9


def test_class_names_are_plain_labels() -> None:
    assert len(CLASS_NAMES) >= 6 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert all(re.fullmatch(r"[a-z_]+", name) for name in CLASS_NAMES)


def test_params_bounds_are_the_demo_limits() -> None:
    """params.yaml validation is the one check of make_demo's arguments (bad values: tests/test_config.py):
    its bounds are the demo's classes and the digits of its ids."""
    demo = load_schema()["properties"]["demo"]["properties"]
    assert demo["n_classes"]["maximum"] == len(CLASS_NAMES)
    most = demo["n_artists"]["maximum"]
    p = validate_params({"demo": {"n_artists": most, "clips_per_class": 1000 * most}})["demo"]
    last_id = f"{CLASS_NAMES[-1]}.{p['n_artists'] - 1:02d}.{p['clips_per_class'] // p['n_artists'] - 1:03d}"
    assert re.fullmatch(ID_PATTERN, last_id)
