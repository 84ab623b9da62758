"""``keras_cnn.crop_frames`` in params.yaml: ``auto`` (the default) or an integer; anything else is refused
naming the key, before any work starts. The rule ``auto`` follows is tested in tests/test_models.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from soundstage.config import ParamsError, validate_params

REPO = Path(__file__).resolve().parents[1]


def cnn_params(**changes) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["keras_cnn"].update(changes)
    return params


def test_crop_frames_defaults_to_auto():
    assert validate_params(cnn_params())["keras_cnn"]["crop_frames"] == "auto"
    params = cnn_params()
    del params["keras_cnn"]["crop_frames"]
    assert validate_params(params)["keras_cnn"]["crop_frames"] == "auto"  # the schema's default


@pytest.mark.parametrize("value", [8, 64, 128.0, 4096])
def test_crop_frames_takes_integers(value):
    assert validate_params(cnn_params(crop_frames=value))["keras_cnn"]["crop_frames"] == int(value)


@pytest.mark.parametrize("value", [0, -16, 7, "big", "Auto", "", True, None, 12.5, [32]])
def test_bad_crop_frames_are_refused_naming_the_key(value):
    with pytest.raises(ParamsError, match=r"keras_cnn\.crop_frames") as err:
        validate_params(cnn_params(crop_frames=value))
    assert err.value.key == "keras_cnn.crop_frames"
    assert "auto" in str(err.value)  # the message says what is allowed


def test_hop_longer_than_an_integer_crop_is_refused():
    with pytest.raises(ParamsError, match="must not exceed keras_cnn.crop_frames") as err:
        validate_params(cnn_params(crop_frames=32, hop_frames=33))
    assert err.value.key == "keras_cnn.hop_frames"
    assert validate_params(cnn_params(crop_frames=32, hop_frames=32))["keras_cnn"]["hop_frames"] == 32
    # With auto the crop is known only at training, which lowers the hop to it (tests/test_models.py).
    assert validate_params(cnn_params(crop_frames="auto", hop_frames=500))["keras_cnn"]["hop_frames"] == 500
