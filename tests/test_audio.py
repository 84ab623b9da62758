"""Tests of soundstage.decode (every format, every kind of bad file) and soundstage.dsp (preprocessing)."""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import (
    BAD_FILE_REASONS,
    FORMATS,
    LOSSY,
    PREPROCESS_PARAMS,
    PREPROCESS_REASONS,
    PROBE_DETECTS,
    channel_freq,
    make_bad_files,
    tone,
    write_tone,
)

from soundstage import decode, dsp
from soundstage.decode import AudioError, load_audio, probe_audio
from soundstage.dsp import (
    ProcessConfig,
    butter_filter,
    fix_duration,
    integrated_loudness,
    normalize,
    preprocess,
    resample,
    segment,
    to_mono,
    trim_silence,
)

RATES = [8000, 16000, 22050, 44100, 48000, 96000]
CHANNELS = [1, 2, 6, 8]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


def sine(freq: float, *, sr: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spec)])


def amplitude_at(x: np.ndarray, freq: float, sr: int) -> float:
    """Amplitude of the ``freq`` component of ``x`` (least squares on sin/cos)."""
    t = np.arange(x.size) / sr
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


# ---------------------------------------------------------------------------------------------
# Every format, rate and channel count


def _format_cases() -> list:
    cases = []
    for fmt, subtype, ext in FORMATS:
        for sr in RATES:
            for ch in CHANNELS:
                if fmt == "MP3" and (ch > 2 or sr > 48000):
                    continue  # MPEG layer III: at most 2 channels and 48 kHz (libsndfile refuses to write)
                cases.append(pytest.param(fmt, subtype, ext, sr, ch, id=f"{fmt}-{subtype}-{sr}-{ch}ch"))
    return cases


_ATOL = {"PCM_U8": 1e-2, "PCM_16": 1e-4}


@pytest.mark.parametrize(("fmt", "subtype", "ext", "sr", "channels"), _format_cases())
def test_probe_and_load_every_format(tmp_path: Path, fmt: str, subtype: str, ext: str, sr: int,
                                     channels: int) -> None:
    duration = 0.2
    path = write_tone(tmp_path / f"tone.{ext}", sr=sr, channels=channels, duration=duration, fmt=fmt,
                      subtype=subtype)
    lossy = subtype in LOSSY
    tol = 0.05 if lossy else 1e-9

    info = probe_audio(path)
    assert (info.sample_rate, info.channels, info.format, info.subtype) == (sr, channels, fmt, subtype)
    assert info.path == str(path)
    assert info.duration == pytest.approx(duration, abs=tol)

    y, got_sr = load_audio(path)
    assert got_sr == sr
    assert y.dtype == np.float32 and y.ndim == 2 and y.shape[0] == channels
    assert y.flags.c_contiguous
    assert info.frames == y.shape[1]  # probe (ingest's manifest) and decode (process) agree exactly
    assert y.shape[1] / sr == pytest.approx(duration, abs=tol)
    if not lossy:
        ref = tone(sr=sr, channels=channels, duration=duration).T
        np.testing.assert_allclose(y, ref, atol=_ATOL.get(subtype, 1e-6))
    for c in range(channels):  # channel order survives (each channel has its own frequency)
        if subtype == "VORBIS" and channels == 6 and c == 5:
            continue  # Vorbis 5.1: the 6th channel is LFE, which libvorbis band-limits at 44.1/48 kHz
        assert dominant_freq(y[c], sr) == pytest.approx(channel_freq(c), abs=10.0)
    mono, mono_sr = load_audio(path, mono=True)  # downmixed while decoding: the same numbers
    assert mono_sr == sr and mono.dtype == np.float32 and mono.shape == (1, y.shape[1])
    np.testing.assert_array_equal(mono[0], to_mono(y))


@pytest.mark.parametrize("channels", [2, 3, 7])
@pytest.mark.parametrize(("fmt", "subtype", "ext"), [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"),
                                                     ("WAV", "PCM_U8", "wav"), ("AIFF", "PCM_S8", "aiff"),
                                                     ("WAV", "PCM_24", "wav"), ("WAV", "FLOAT", "wav")])
def test_load_mono_is_bit_identical_at_full_scale(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                                  subtype: str, ext: str, channels: int) -> None:
    # Integer PCM is summed as integers: full-scale values (-32768, 32767) and every channel count
    # must still give exactly to_mono of the float decode, and librosa's mean over channels.
    x = rng.integers(-32768, 32768, size=(4000, channels)).astype(np.float32) / 32768
    x[:3] = [[-1.0] * channels, [32767 / 32768] * channels, [0.0] * channels]
    path = tmp_path / f"full.{ext}"
    sf.write(path, x, 16000, format=fmt, subtype=subtype)
    y, _ = load_audio(path)
    mono, _ = load_audio(path, mono=True)
    np.testing.assert_array_equal(mono[0], to_mono(y))
    if channels == 2:  # two channels: (a + b) * 0.5 is the mean exactly, whatever the order
        np.testing.assert_array_equal(mono[0], y.mean(axis=0, dtype=np.float32))


@pytest.mark.parametrize("channels", [1, 2, 3, 7, 300])
def test_downmix_frames_equals_to_mono(rng: np.random.Generator, channels: int) -> None:
    pcm = rng.integers(-32768, 32768, size=(257, channels)).astype(np.int16)
    as_float = pcm.astype(np.float32) / np.float32(32768)  # what libsndfile's float decode gives
    want = to_mono(np.ascontiguousarray(as_float.T))
    np.testing.assert_array_equal(decode.downmix_frames(as_float), want)
    np.testing.assert_array_equal(decode.downmix_frames(pcm), want)  # > 256 channels: via float
    assert decode.downmix_frames(pcm).dtype == np.float32
    with pytest.raises(ValueError, match="frames"):
        decode.downmix_frames(as_float[:, 0])


def test_load_mono_still_rejects_nonfinite_and_truncated(tmp_path: Path) -> None:
    x = np.zeros((1000, 2), np.float32)
    x[10, 1] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*1 NaN") as err:
        load_audio(path, mono=True)
    assert err.value.reason == "nonfinite"
    good = write_tone(tmp_path / "cut.wav", sr=8000, channels=2, duration=0.5, subtype="PCM_16")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as err:
        load_audio(good, mono=True)
    assert err.value.reason == "truncated"


# ---------------------------------------------------------------------------------------------
# Bad files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_bad_files(tmp_path_factory.mktemp("bad files"))


def _case(bad_files: dict, name: str):
    if name not in bad_files:
        pytest.skip(f"{name}: cannot be created here (running as root: chmod 000 does not block reads)")
    return bad_files[name]


@pytest.mark.parametrize("name", sorted(BAD_FILE_REASONS))
def test_load_bad_file(bad_files: dict, name: str) -> None:
    path, reason = _case(bad_files, name)
    if reason is None or reason in PREPROCESS_REASONS:
        y, sr = load_audio(path)
        assert y.size and np.isfinite(y).all()
        if reason is None:
            return
        with pytest.raises(AudioError) as err:
            preprocess(y, sr=sr, config=ProcessConfig.from_dict(PREPROCESS_PARAMS))
        assert err.value.reason == reason and err.value.path is None
        if reason == "too_short":  # kept by default: every clip with audio is usable
            (kept,), _ = preprocess(y, sr=sr, config=ProcessConfig())
            assert kept.audio.size > 0
        named = err.value.with_path(path)
        assert named.reason == reason and path.name in str(named)
        return
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert err.value.reason == reason, str(err.value)
    assert err.value.path == str(path)
    assert path.name in str(err.value)


@pytest.mark.parametrize("name", sorted(BAD_FILE_REASONS))
def test_probe_bad_file(bad_files: dict, name: str) -> None:
    path, reason = _case(bad_files, name)
    if name not in PROBE_DETECTS:
        info = probe_audio(path)  # only decoding (or preprocessing) finds these
        assert info.frames > 0
        return
    with pytest.raises(AudioError) as err:
        probe_audio(path)
    assert err.value.reason == reason, str(err.value)
    assert path.name in str(err.value)


def test_unicode_path_round_trip(bad_files: dict) -> None:
    path, _ = bad_files["unicode name"]
    assert " " in path.name and not path.name.isascii()
    info = probe_audio(path)
    y, sr = load_audio(str(path))
    assert (info.channels, y.shape[0], sr) == (2, 2, 16000)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="nope.wav") as err:
        load_audio(tmp_path / "nope.wav")
    assert err.value.reason == "not_found"


def test_permission_denied_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 000 does not stop root, so simulate the PermissionError the OS would raise.
    path = write_tone(tmp_path / "locked.wav", sr=8000, duration=0.1)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decode, "open", denied, raising=False)
    for fn in (probe_audio, load_audio):
        with pytest.raises(AudioError, match="locked.wav") as err:
            fn(path)
        assert err.value.reason == "unreadable"


def test_truncation_detected_at_several_cut_points(tmp_path: Path) -> None:
    src = write_tone(tmp_path / "full.ogg", sr=16000, channels=1, duration=1.0, fmt="OGG", subtype="VORBIS")
    data = src.read_bytes()
    for cut in (0.3, 0.9, 0.99):  # libsndfile fails to open the first, returns 0 frames for the others
        dest = tmp_path / f"cut{cut}.ogg"
        dest.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(AudioError) as err:
            load_audio(dest)
        assert err.value.reason == "truncated"


def test_flac_without_a_total_is_decoded_to_its_end(tmp_path: Path, rng: np.random.Generator) -> None:
    # A FLAC written as a stream states no total (0 in STREAMINFO): libsndfile announces an unknown
    # length, which is no reason to reject the file; it is decoded and measured.
    x = (rng.uniform(-0.5, 0.5, (12345, 2)) * 32768).round().astype(np.float32) / 32768
    path = tmp_path / "stream.flac"
    sf.write(path, x, 16000, format="FLAC", subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"fLaC" and raw[4] & 0x7F == 0  # STREAMINFO first: total in bytes 13.5-18 of it
    raw[8 + 13] &= 0xF0
    raw[8 + 14: 8 + 18] = bytes(4)
    path.write_bytes(bytes(raw))
    assert sf.info(str(path)).frames > 10**15  # libsndfile: length unknown
    info = probe_audio(path)
    assert (info.frames, info.duration) == (12345, 12345 / 16000)
    y, sr = load_audio(path)
    assert sr == 16000 and y.shape == (2, 12345)
    np.testing.assert_array_equal(y, x.T)
    mono, _ = load_audio(path, mono=True)
    np.testing.assert_array_equal(mono[0], to_mono(y))
    cut = tmp_path / "cut.flac"
    cut.write_bytes(bytes(raw[: len(raw) // 2]))
    for fn in (probe_audio, load_audio):  # no stated length, but a stream cut mid-frame fails to decode
        with pytest.raises(AudioError, match="cut.flac.*lost sync") as err:
            fn(cut)
        assert err.value.reason == "truncated"


def test_broken_symlink_is_not_found_and_says_so(tmp_path: Path) -> None:
    link = tmp_path / "gone.wav"
    link.symlink_to(tmp_path / "nowhere.wav")
    for fn in (probe_audio, load_audio):
        with pytest.raises(AudioError, match=r"gone\.wav.*broken symbolic link.*nowhere\.wav") as err:
            fn(link)
        assert err.value.reason == "not_found"


def test_wav_with_unknown_data_size_is_not_truncated(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "stream.wav", sr=8000, duration=0.1, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    pos = raw.index(b"data")
    raw[pos + 4: pos + 8] = b"\xff\xff\xff\xff"  # what streaming writers leave behind
    path.write_bytes(bytes(raw))
    y, _ = load_audio(path)
    assert y.shape == (1, 800)


def test_audio_error_pickles_and_names_file() -> None:
    err = AudioError("/data/a b/ü.wav", "truncated", "cut short")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, back.detail) == (err.path, err.reason, err.detail)
    assert "ü.wav" in str(back) and "truncated" in str(back)


def test_audioread_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("audioread")
    path = write_tone(tmp_path / "x.wav", sr=16000, channels=2, duration=0.25, subtype="PCM_16")

    def refuse(*args, **kwargs):
        raise sf.LibsndfileError(1, prefix="Error opening: ")

    monkeypatch.setattr(decode.sf, "SoundFile", refuse)
    info = probe_audio(path)
    assert (info.sample_rate, info.channels, info.format, info.subtype) == (16000, 2, "WAV", "")
    y, sr = load_audio(path)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (2, 4000)
    np.testing.assert_allclose(y, tone(sr=16000, channels=2, duration=0.25).T, atol=1e-4)
    mono, _ = load_audio(path, mono=True)
    np.testing.assert_array_equal(mono, to_mono(y)[np.newaxis])


def test_no_audioread_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tone(tmp_path / "x.wav", sr=8000, duration=0.1)

    def refuse(*args, **kwargs):
        raise sf.LibsndfileError(1, prefix="Error opening: ")

    monkeypatch.setattr(decode.sf, "SoundFile", refuse)
    monkeypatch.setitem(sys.modules, "audioread", None)  # import now raises ImportError
    with pytest.raises(AudioError, match=r"x\.wav.*not installed.*Readable formats: .*FLAC") as err:
        load_audio(path)
    assert err.value.reason == "undecodable"


# ---------------------------------------------------------------------------------------------
# Preprocessing functions


def test_to_mono() -> None:
    y = np.stack([np.ones(5, np.float32), np.zeros(5, np.float32)])
    np.testing.assert_array_equal(to_mono(y), np.full(5, 0.5, np.float32))
    assert to_mono(y).dtype == np.float32
    one = y[:1]
    assert to_mono(one).shape == (5,) and np.shares_memory(to_mono(one), one)
    assert to_mono(y[0]) is y[0] or np.shares_memory(to_mono(y[0]), y)
    with pytest.raises(ValueError, match="y"):
        to_mono(np.zeros((1, 2, 3), np.float32))


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize(("orig_sr", "target_sr"), [(44100, 22050), (16000, 48000), (22050, 16000), (96000, 8000)])
def test_resample(orig_sr: int, target_sr: int, ndim: int) -> None:
    x = sine(1000.0, sr=orig_sr, seconds=0.5)
    if ndim == 2:
        x = np.stack([x, -x])
    y = resample(x, orig_sr=orig_sr, target_sr=target_sr)
    assert y.dtype == np.float32 and y.ndim == ndim
    assert y.shape[-1] == pytest.approx(x.shape[-1] * target_sr / orig_sr, abs=1)
    first = y if ndim == 1 else y[0]
    assert dominant_freq(first, target_sr) == pytest.approx(1000.0, abs=5)
    assert amplitude_at(first[200:-200], 1000.0, target_sr) == pytest.approx(0.5, rel=0.01)
    if ndim == 2:
        np.testing.assert_allclose(y[1], -y[0], atol=1e-6)


def test_resample_same_rate_is_noop() -> None:
    x = sine(440, sr=16000, seconds=0.1)
    assert resample(x, orig_sr=16000, target_sr=16000) is x
    with pytest.raises(ValueError, match="target_sr"):
        resample(x, orig_sr=16000, target_sr=0)


@pytest.mark.parametrize("ndim", [1, 2])
def test_trim_silence(ndim: int) -> None:
    sr = 16000
    x = np.concatenate([np.zeros(sr // 2), sine(440, sr=sr, seconds=0.5), np.zeros(sr // 2)]).astype(np.float32)
    if ndim == 2:
        x = np.stack([x, 0.5 * x])
    y, (start, end) = trim_silence(x)
    assert y.dtype == np.float32 and np.shares_memory(y, x)
    assert abs(start - sr // 2) <= 2048 and abs(end - sr) <= 2048
    np.testing.assert_array_equal(y, x[..., start:end])
    empty, interval = trim_silence(np.zeros(0, np.float32))
    assert empty.size == 0 and interval == (0, 0)


@pytest.mark.integration  # librosa's JIT / Keras models: seconds each
@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize(("top_db", "frame_length", "hop_length"), [(60.0, 2048, 512), (30.0, 1024, 256),
                                                                    (20.0, 511, 128), (40.0, 300, 450)])
def test_trim_silence_matches_librosa(top_db: float, frame_length: int, hop_length: int, ndim: int,
                                      rng: np.random.Generator) -> None:
    librosa = pytest.importorskip("librosa")
    env = np.concatenate([np.zeros(3000), np.linspace(0, 1, 4000), np.ones(5000), np.linspace(1, 0, 6000),
                          np.zeros(2500)])
    x = (env * rng.standard_normal(env.size) * 0.5 + 1e-4 * rng.standard_normal(env.size)).astype(np.float32)
    if ndim == 2:
        x = np.stack([x, 0.1 * x[::-1]])
    got, interval = trim_silence(x, top_db=top_db, frame_length=frame_length, hop_length=hop_length)
    want, index = librosa.effects.trim(x, top_db=top_db, frame_length=frame_length, hop_length=hop_length)
    assert interval == tuple(int(i) for i in index)
    np.testing.assert_array_equal(got, want)


def _mix(sr: int, freqs: list[float], seconds: float = 1.0) -> np.ndarray:
    return np.sum([sine(f, sr=sr, seconds=seconds, amplitude=0.3) for f in freqs], axis=0).astype(np.float32)


@pytest.mark.parametrize(("kind", "cutoff", "removed", "kept"), [
    ("highpass", 1000.0, [100.0], [3000.0]),
    ("lowpass", 1000.0, [3000.0], [100.0]),
    ("bandpass", (500.0, 2000.0), [80.0, 6000.0], [1000.0]),
])
def test_butter_filter(kind: str, cutoff, removed: list[float], kept: list[float]) -> None:
    sr = 16000
    x = _mix(sr, removed + kept)
    y = butter_filter(x, sr=sr, kind=kind, cutoff=cutoff, order=4)
    assert y.dtype == np.float32 and y.shape == x.shape
    mid = y[sr // 10: -sr // 10]
    for f in removed:
        assert amplitude_at(mid, f, sr) < 0.01 * 0.3
    for f in kept:
        assert amplitude_at(mid, f, sr) == pytest.approx(0.3, rel=0.02)
    y2 = butter_filter(np.stack([x, x]), sr=sr, kind=kind, cutoff=cutoff)
    np.testing.assert_allclose(y2[1], y, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"kind": "highpass", "cutoff": 0.0}, "cutoff"),
    ({"kind": "highpass", "cutoff": -5.0}, "cutoff"),
    ({"kind": "lowpass", "cutoff": 8000.0}, "cutoff"),
    ({"kind": "lowpass", "cutoff": 9000.0}, "cutoff"),
    ({"kind": "lowpass", "cutoff": (100.0, 200.0)}, "cutoff"),
    ({"kind": "bandpass", "cutoff": (2000.0, 500.0)}, "cutoff"),
    ({"kind": "bandpass", "cutoff": 500.0}, "cutoff"),
    ({"kind": "bandpass", "cutoff": (100.0, 8000.0)}, "cutoff"),
    ({"kind": "notch", "cutoff": 100.0}, "kind"),
    ({"kind": "highpass", "cutoff": 100.0, "order": 0}, "order"),
    ({"kind": "highpass", "cutoff": 100.0, "sr": 0}, "sr"),
])
def test_butter_filter_invalid(kwargs: dict, param: str) -> None:
    kwargs = {"sr": 16000, **kwargs}
    with pytest.raises(ValueError, match=rf"^{param}\b"):
        butter_filter(np.zeros(100, np.float32), **kwargs)


@pytest.mark.parametrize("n", [0, 1, 2, 10, 15, 16, 100])
@pytest.mark.parametrize("kind", ["highpass", "bandpass"])
def test_butter_filter_short_signals(n: int, kind: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal(n).astype(np.float32)
    cutoff = 300.0 if kind == "highpass" else (300.0, 3000.0)
    y = butter_filter(x, sr=16000, kind=kind, cutoff=cutoff, order=8)
    assert y.shape == (n,) and y.dtype == np.float32 and np.isfinite(y).all()


def test_k_weighting_matches_bs1770_at_48k() -> None:
    sos = dsp._k_weighting_sos(48000)
    np.testing.assert_allclose(sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285,
                                        1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


def test_integrated_loudness_reference_tone() -> None:
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS; two equal channels +3.01 LU.
    x = sine(997.0, sr=48000, seconds=2.0, amplitude=1.0)
    assert integrated_loudness(x, sr=48000) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(np.stack([x, x]), sr=48000) == pytest.approx(0.0, abs=0.05)
    assert integrated_loudness(x[:4800], sr=48000) == pytest.approx(-3.01, abs=0.1)  # < one block
    assert integrated_loudness(np.zeros(1000, np.float32), sr=48000) == -math.inf


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize(("method", "target_db"), [("peak", -1.0), ("peak", -12.0), ("rms", -20.0),
                                                    ("rms", -30.0), ("loudness", -23.0), ("loudness", -14.0)])
def test_normalize_hits_target(method: str, target_db: float, ndim: int, rng: np.random.Generator) -> None:
    sr = 22050
    x = (0.05 * sine(997.0, sr=sr, seconds=1.0) + 0.01 * rng.standard_normal(sr)).astype(np.float32)
    if ndim == 2:
        x = np.stack([x, 0.5 * x])
    before = x.copy()
    y = normalize(x, method=method, target_db=target_db, sr=sr)
    np.testing.assert_array_equal(x, before)  # input untouched
    assert y.dtype == np.float32 and y.shape == x.shape
    if method == "peak":
        assert np.abs(y).max() == pytest.approx(10 ** (target_db / 20), rel=1e-5)
    elif method == "rms":
        assert np.sqrt(np.mean(np.square(y, dtype=np.float64))) == pytest.approx(10 ** (target_db / 20), rel=1e-4)
    else:
        assert integrated_loudness(y, sr=sr) == pytest.approx(target_db, abs=0.01)


def test_loudness_normalized_sine_has_expected_amplitude() -> None:
    x = sine(997.0, sr=48000, seconds=1.0, amplitude=0.1)
    y = normalize(x, method="loudness", target_db=-23.0, sr=48000)
    assert np.abs(y).max() == pytest.approx(10 ** ((-23.0 + 3.01) / 20), rel=0.01)


@pytest.mark.parametrize(("method", "target_db"), [("rms", 0.0), ("loudness", -1.0)])
def test_normalize_clip_guard(method: str, target_db: float) -> None:
    x = np.zeros(22050, np.float32)
    x[::2205] = 0.5  # clicks: huge crest factor
    y = normalize(x, method=method, target_db=target_db, sr=22050)
    assert 0.999 <= np.abs(y).max() <= 1.0


@pytest.mark.parametrize("method", ["peak", "rms", "loudness"])
@pytest.mark.parametrize("level", [0.0, 1e-9])
def test_normalize_silence_unchanged(method: str, level: float) -> None:
    x = np.full(1000, level, np.float32)
    y = normalize(x, method=method, target_db=-1.0, sr=16000)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, x)


def test_normalize_invalid() -> None:
    x = sine(440, sr=8000, seconds=0.1)
    with pytest.raises(ValueError, match="method"):
        normalize(x, method="lufs", target_db=-1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sr"):
        normalize(x, method="loudness", target_db=-23.0)
    with pytest.raises(ValueError, match="target_db"):
        normalize(x, method="peak", target_db=math.nan)


def test_fix_duration() -> None:
    x = np.arange(1, 11, dtype=np.float32)
    crop = fix_duration(x, n_samples=4)
    np.testing.assert_array_equal(crop, [1, 2, 3, 4])
    assert np.shares_memory(crop, x)
    np.testing.assert_array_equal(fix_duration(x, n_samples=13), [*range(1, 11), 0, 0, 0])
    assert fix_duration(x, n_samples=10) is x or np.shares_memory(fix_duration(x, n_samples=10), x)
    np.testing.assert_array_equal(fix_duration(x[:3], n_samples=5, pad_mode="wrap"), [1, 2, 3, 1, 2])
    two = fix_duration(np.stack([x, -x]), n_samples=12)
    assert two.shape == (2, 12) and (two[:, 10:] == 0).all()
    assert fix_duration(np.zeros(0, np.float32), n_samples=3, pad_mode="reflect").tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="n_samples"):
        fix_duration(x, n_samples=-1)


@pytest.mark.parametrize(("n", "win", "hop", "pad_last", "starts"), [
    (10, 4, 2, False, [0, 2, 4, 6]),
    (10, 4, 2, True, [0, 2, 4, 6]),
    (11, 4, 2, False, [0, 2, 4, 6]),
    (11, 4, 2, True, [0, 2, 4, 6, 8]),
    (12, 4, 4, True, [0, 4, 8]),
    (13, 4, 4, True, [0, 4, 8, 12]),
    (3, 4, 2, True, [0]),
    (3, 4, 2, False, []),
    (0, 4, 2, True, []),
    (18, 4, 8, True, [0, 8, 16]),
    (13, 4, 8, True, [0, 8]),
])
def test_segment(n: int, win: int, hop: int, pad_last: bool, starts: list[int]) -> None:
    x = np.arange(1, n + 1, dtype=np.float32)
    windows = segment(x, win=win, hop=hop, pad_last=pad_last)
    assert [s for s, _ in windows] == starts
    for s, w in windows:
        assert w.shape == (win,) and w.dtype == np.float32
        real = min(win, n - s)
        np.testing.assert_array_equal(w[:real], x[s:s + real])
        assert (w[real:] == 0).all()
    two = segment(np.stack([x, x]), win=win, hop=hop, pad_last=pad_last)
    assert [s for s, _ in two] == starts and all(w.shape == (2, win) for _, w in two)


def test_segment_invalid() -> None:
    with pytest.raises(ValueError, match="hop"):
        segment(np.zeros(10, np.float32), win=4, hop=0, pad_last=False)


# ---------------------------------------------------------------------------------------------
# preprocess


def _config(**sections) -> ProcessConfig:
    return ProcessConfig.from_dict(sections)


def _padded_clip(sr: int, seconds: float, *, channels: int = 2, silence: float = 0.3) -> np.ndarray:
    body = tone(sr=sr, channels=channels, duration=seconds).T
    pad = np.zeros((channels, round(silence * sr)), np.float32)
    return np.concatenate([pad, body, pad], axis=1)


def test_preprocess_mode_none() -> None:
    y = _padded_clip(44100, 1.0)
    segments, sr = preprocess(y, sr=44100, config=_config(sample_rate=16000))
    assert sr == 16000 and len(segments) == 1
    seg = segments[0]
    assert (seg.index, seg.start) == (0, 0.0)
    assert seg.audio.dtype == np.float32 and seg.audio.ndim == 1
    assert seg.audio.size == pytest.approx(16000, abs=2048)  # silence trimmed
    assert np.abs(seg.audio).max() == pytest.approx(10 ** (-1 / 20), rel=1e-5)


@pytest.mark.parametrize(("seconds", "short", "expect"), [(2.0, "pad", 32000), (0.5, "pad", 8000),
                                                         (0.5, "reject", 8000), (2.0, "reject", "too_short")])
def test_preprocess_mode_fixed(seconds: float, short: str, expect) -> None:
    y = tone(sr=16000, duration=1.0).T
    cfg = _config(sample_rate=None, trim={"enabled": False},
                  duration={"mode": "fixed", "seconds": seconds, "short": short})
    if expect == "too_short":
        with pytest.raises(AudioError) as err:
            preprocess(y, sr=16000, config=cfg)
        assert err.value.reason == "too_short"
        return
    (seg,), sr = preprocess(y, sr=16000, config=cfg)
    assert sr == 16000 and seg.audio.shape == (expect,)
    if expect > 16000:
        assert (seg.audio[16000:] == 0).all() and np.abs(seg.audio[:16000]).max() > 0.5


@pytest.mark.parametrize(("clip_s", "min_s", "short", "n_windows"), [
    (3.0, 0.25, "pad", 5),      # windows end exactly at the clip end
    (3.3, 0.25, "pad", 6),      # 0.8 s tail is padded into a 6th window
    (3.3, 0.9, "pad", 5),       # tail shorter than min_seconds is dropped
    (3.3, 0.25, "reject", 5),   # reject never pads
    (0.6, 0.25, "pad", 1),      # shorter than one window: one padded window
    (0.6, 0.25, "reject", 0),   # ... or too_short
])
def test_preprocess_mode_segment(clip_s: float, min_s: float, short: str, n_windows: int) -> None:
    sr = 8000
    y = tone(sr=sr, duration=clip_s).T
    cfg = _config(sample_rate=None, trim={"enabled": False},
                  duration={"mode": "segment", "seconds": 1.0, "hop_seconds": 0.5, "min_seconds": min_s,
                            "short": short})
    if n_windows == 0:
        with pytest.raises(AudioError) as err:
            preprocess(y, sr=sr, config=cfg)
        assert err.value.reason == "too_short"
        return
    segments, out_sr = preprocess(y, sr=sr, config=cfg)
    assert out_sr == sr and len(segments) == n_windows
    assert [s.index for s in segments] == list(range(n_windows))
    assert [s.start for s in segments] == pytest.approx([0.5 * k for k in range(n_windows)])
    assert all(s.audio.shape == (sr,) and s.audio.dtype == np.float32 for s in segments)
    # one gain for the whole clip: every full window keeps the same level
    peaks = [np.abs(s.audio).max() for s in segments]
    assert max(peaks) == pytest.approx(10 ** (-1 / 20), rel=1e-5)


@pytest.mark.parametrize(("y", "cfg", "reason"), [
    (np.zeros((1, 16000), np.float32), {}, "silent"),
    (np.zeros((2, 0), np.float32), {}, "silent"),
    (np.full((1, 16000), 1e-8, np.float32), {"trim": {"enabled": False}}, "silent"),
    (tone(sr=16000, duration=0.1).T, {"duration": {"min_seconds": 0.2}}, "too_short"),
    (tone(sr=16000, duration=0.1).T, {"duration": {"min_seconds": 0.2}, "trim": {"enabled": False}}, "too_short"),
])
def test_preprocess_rejections(y: np.ndarray, cfg: dict, reason: str) -> None:
    with pytest.raises(AudioError) as err:
        preprocess(y, sr=16000, config=_config(**cfg))
    assert err.value.reason == reason


@pytest.mark.parametrize("seconds", [0.005, 0.1, 0.242])
def test_default_config_keeps_every_short_clip(seconds: float) -> None:
    # A spoken-digit set lost 5.5 % of its clips to a 0.25 s minimum: by default a clip with any
    # audio is kept, as long as it is (mode none), or padded (fixed and segment modes).
    y = tone(sr=16000, duration=seconds).T
    (seg,), sr = preprocess(y, sr=16000, config=ProcessConfig())
    assert sr == 22050 and seg.audio.size == pytest.approx(seconds * 22050, abs=1)
    for mode, n in (("fixed", 22050), ("segment", 22050)):
        segments, _ = preprocess(y, sr=16000, config=_config(duration={"mode": mode, "seconds": 1.0}))
        assert [s.audio.shape for s in segments] == [(n,)]


@pytest.mark.parametrize(("cfg", "setting"), [
    ({"duration": {"min_seconds": 0.25}}, "process.duration.min_seconds=0.25"),
    ({"duration": {"mode": "fixed", "seconds": 1.0, "short": "reject"}}, "process.duration.seconds=1 "),
])
def test_too_short_names_the_setting(cfg: dict, setting: str) -> None:
    with pytest.raises(AudioError, match=re.escape(setting)) as err:
        preprocess(tone(sr=16000, duration=0.242).T, sr=16000, config=_config(**cfg))
    assert err.value.reason == "too_short"


def test_preprocess_keeps_channels_and_native_rate() -> None:
    y = _padded_clip(16000, 0.5)
    (seg,), sr = preprocess(y, sr=16000, config=_config(sample_rate=None, mono=False))
    assert sr == 16000 and seg.audio.shape[0] == 2 and seg.audio.dtype == np.float32
    (seg1,), _ = preprocess(y[:1], sr=16000, config=_config(sample_rate=None, mono=False))
    assert seg1.audio.ndim == 1


def test_preprocess_filter_and_loudness() -> None:
    sr = 16000
    y = _mix(sr, [60.0, 2000.0])[np.newaxis]
    cfg = _config(sample_rate=None, filter={"enabled": True, "kind": "highpass", "cutoff": [500.0]},
                  normalize={"method": "loudness", "target_db": -20.0})
    (seg,), _ = preprocess(y, sr=sr, config=cfg)
    assert amplitude_at(seg.audio[1000:-1000], 60.0, sr) < 1e-3
    assert integrated_loudness(seg.audio, sr=sr) == pytest.approx(-20.0, abs=0.01)
    bad = _config(sample_rate=None, filter={"enabled": True, "kind": "lowpass", "cutoff": [9000.0]})
    with pytest.raises(ValueError, match="cutoff"):
        preprocess(y, sr=sr, config=bad)


# ---------------------------------------------------------------------------------------------
# ProcessConfig (params.yaml validation and its errors: tests/test_config.py)


def test_config_defaults_and_round_trip() -> None:
    cfg = ProcessConfig.from_dict({})
    assert cfg == ProcessConfig() == ProcessConfig.from_dict(None)
    assert cfg.sample_rate == 22050 and cfg.filter.cutoff == (30.0,) and cfg.duration.short == "pad"
    d = cfg.to_dict()
    assert d["filter"]["cutoff"] == [30.0] and set(d) == {"sample_rate", "mono", "trim", "filter", "normalize",
                                                          "duration"}
    assert ProcessConfig.from_dict(d) == cfg
    assert ProcessConfig.from_dict({"filter": {"cutoff": [40, 400]}}).filter.cutoff == (40, 400)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mono = False  # type: ignore[misc]


def test_config_accepts_params_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    if not params.exists():
        pytest.skip("no params.yaml")
    section = yaml.safe_load(params.read_text(encoding="utf-8"))["process"]
    cfg = ProcessConfig.from_dict(section)
    assert ProcessConfig.from_dict(cfg.to_dict()) == cfg
