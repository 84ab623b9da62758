"""MP3 lengths: a whole MP3 is kept with the length that decodes, whatever its header says.

libsndfile (through mpg123) announces a frame count that is exact only when the file starts with a
Xing/Info header; without one it estimates the count from the file size (an ID3v2 tag with cover
art or a variable bitrate makes it too high, a loud start in a VBR stream too low). These tests
build every shape of file from libsndfile's own LAME output (see ``audio_fixtures.write_mp3``) and
check that ``probe_audio`` (ingest's manifest) and ``load_audio`` (process) agree on the exact
length, and that a stream cut inside a frame is still ``truncated``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import l3_frames, mp3_samples_per_frame, tone, write_mp3

from soundstage.decode import AudioError, load_audio, probe_audio
from soundstage.dsp import to_mono
from soundstage.ingest import ingest

TAGS = {  # name: write_mp3 keyword arguments
    "bare": {},
    "id3v2": {"id3v2": 600},
    "id3v2-cover-art": {"id3v2": 60_000},  # the real dataset's case: a tag far larger than the audio
    "id3v1": {"id3v1": True},
    "id3v2+id3v1": {"id3v2": 600, "id3v1": True},
    "apev2+id3v1": {"apev2": 3000, "id3v1": True},
}
STREAMS = [  # (sample rate, channels): MPEG-1, MPEG-2 and MPEG-2.5 layer III
    (44100, 2), (16000, 1), (8000, 1),
]


def signal(sr: int, channels: int, seconds: float = 0.8) -> np.ndarray:
    return tone(sr=sr, channels=channels, duration=seconds, freq=440.0)


def burst_then_quiet(sr: int) -> np.ndarray:
    """Loud noise (large VBR frames), then a long quiet stretch (small frames) and a tone at the end:
    a Xing-less VBR file of this shape makes libsndfile under-estimate its length."""
    rng = np.random.default_rng(7)
    noise = rng.uniform(-0.9, 0.9, round(0.2 * sr))
    quiet = np.zeros(round(3.0 * sr))
    end = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(round(0.4 * sr)) / sr)
    return np.concatenate([noise, quiet, end]).astype(np.float32)[:, np.newaxis]


def assert_kept(path: Path, samples: int, sr: int, channels: int) -> np.ndarray:
    info = probe_audio(path)
    assert (info.format, info.sample_rate, info.channels) == ("MP3", sr, channels)
    assert info.frames == samples, f"probe: {info.frames} frames, the file holds {samples}"
    assert info.duration == samples / sr
    y, got_sr = load_audio(path)
    assert got_sr == sr and y.shape == (channels, samples) and y.dtype == np.float32
    mono, _ = load_audio(path, mono=True)
    np.testing.assert_array_equal(mono[0], to_mono(y))
    return y


@pytest.mark.parametrize("sr, channels", STREAMS, ids=[f"{sr}Hz-{ch}ch" for sr, ch in STREAMS])
@pytest.mark.parametrize("tags", list(TAGS))
@pytest.mark.parametrize("xing", [True, False], ids=["xing", "no-xing"])
@pytest.mark.parametrize("mode", ["CONSTANT", "VARIABLE"])
def test_whole_mp3_is_kept_with_its_decoded_length(tmp_path: Path, mode: str, xing: bool, tags: str, sr: int,
                                                   channels: int) -> None:
    mp3 = write_mp3(tmp_path / "x.mp3", signal(sr, channels), sr=sr, bitrate_mode=mode, xing=xing, **TAGS[tags])
    y = assert_kept(mp3.path, mp3.samples, sr, channels)
    if not xing:  # every frame decodes: the encoder's delay and padding are part of the stream
        assert mp3.samples == mp3.frames * mp3_samples_per_frame(sr)
    peak = np.abs(y).max(axis=1)
    assert (peak > 0.3).all() and (peak < 0.7).all()  # the tone, not silence or noise


@pytest.mark.parametrize("xing", [True, False], ids=["xing", "no-xing"])
def test_vbr_whose_length_libsndfile_underestimates_decodes_to_the_end(tmp_path: Path, xing: bool) -> None:
    sr = 44100
    mp3 = write_mp3(tmp_path / "x.mp3", burst_then_quiet(sr), sr=sr, bitrate_mode="VARIABLE",
                    compression_level=0.0, xing=xing, id3v1=True)
    y = assert_kept(mp3.path, mp3.samples, sr, 1)
    # the closing tone is really decoded (not padding): full level in the last 0.3 s of the clip
    tail = y[0, mp3.samples - round(0.5 * sr): mp3.samples - round(0.1 * sr)]
    assert np.abs(tail).max() > 0.3


@pytest.mark.parametrize("tags", ["bare", "id3v2-cover-art", "id3v1"])
@pytest.mark.parametrize("xing", [True, False], ids=["xing", "no-xing"])
@pytest.mark.parametrize("mode", ["CONSTANT", "VARIABLE"])
def test_mp3_cut_inside_a_frame_is_truncated(tmp_path: Path, mode: str, xing: bool, tags: str) -> None:
    sr = 22050
    mp3 = write_mp3(tmp_path / "full.mp3", signal(sr, 2, 1.5), sr=sr, bitrate_mode=mode, xing=xing, **TAGS[tags])
    data = mp3.path.read_bytes()
    frames = l3_frames(data, mp3.audio.start)
    pos, size = frames[len(frames) * 2 // 3]
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: pos + size // 2])
    for fn in (probe_audio, load_audio):
        with pytest.raises(AudioError) as err:
            fn(cut)
        assert err.value.reason == "truncated", str(err.value)
        assert "cut.mp3" in str(err.value) and "frame" in err.value.detail


def test_mp3_cut_between_frames(tmp_path: Path) -> None:
    """A stream cut at a frame boundary: with a Xing header it is short of the frames the header
    states (truncated); without one it is a valid, shorter stream (nothing says otherwise)."""
    sr = 44100
    for xing in (True, False):
        mp3 = write_mp3(tmp_path / f"full{xing}.mp3", signal(sr, 1, 1.5), sr=sr, xing=xing)
        data = mp3.path.read_bytes()
        frames = l3_frames(data, mp3.audio.start)
        keep = len(frames) // 2
        cut = tmp_path / f"cut{xing}.mp3"
        cut.write_bytes(data[: frames[keep][0]])
        if xing:
            for fn in (probe_audio, load_audio):
                with pytest.raises(AudioError, match=rf"states {mp3.frames} .*{keep} ") as err:
                    fn(cut)
                assert err.value.reason == "truncated"
        else:
            assert_kept(cut, keep * mp3_samples_per_frame(sr), sr, 1)


def test_ingest_keeps_tagged_mp3s_with_exact_durations(tmp_path: Path) -> None:
    """The real dataset's failure: complete MP3s with an ID3v2 tag and no Xing header were all
    rejected as truncated (libsndfile's estimate counts the tag as audio)."""
    root = tmp_path / "samples"
    expected = {}
    for k, (label, mode) in enumerate([("cello", "CONSTANT"), ("cello", "VARIABLE"), ("flute", "CONSTANT"),
                                       ("flute", "VARIABLE")]):
        mp3 = write_mp3(root / label / f"{label}_{k}.mp3", signal(44100, 1, 0.3 + 0.2 * k), sr=44100,
                        bitrate_mode=mode, xing=False, id3v2=20_000 + 5000 * k, id3v1=k % 2 == 1)
        expected[f"{label}/{label}_{k}"] = mp3.samples / 44100
    manifest, rejected = ingest(root=root, extensions=["mp3"])
    assert rejected.empty, rejected.to_dict("records")
    assert dict(zip(manifest["id"], manifest["duration"])) == expected


def test_mp3_after_unknown_leading_bytes_is_measured_too(tmp_path: Path) -> None:
    """libsndfile finds MPEG frames after bytes that are no tag (here: zeros); the frame walk must
    measure such a file as well, not trust libsndfile's estimate."""
    sr = 44100
    mp3 = write_mp3(tmp_path / "x.mp3", burst_then_quiet(sr), sr=sr, bitrate_mode="VARIABLE", compression_level=0.0,
                    xing=False)
    odd = tmp_path / "odd.mp3"
    odd.write_bytes(bytes(100) + mp3.path.read_bytes())
    assert_kept(odd, mp3.samples, sr, 1)
    cut = tmp_path / "odd cut.mp3"
    data = odd.read_bytes()
    cut.write_bytes(data[: len(data) - 50])  # inside the last frame
    with pytest.raises(AudioError, match="ends inside a frame") as err:
        load_audio(cut)
    assert err.value.reason == "truncated"


@pytest.mark.parametrize("xing", [True, False], ids=["xing", "no-xing"])
def test_probe_and_load_agree_wherever_a_file_is_cut(tmp_path: Path, xing: bool) -> None:
    """Cut anywhere (inside the ID3v2 tag, a frame header, a frame, between frames, the ID3v1 tag):
    probe and load give the same verdict, and the length of the whole frames left when kept."""
    sr = 16000
    mp3 = write_mp3(tmp_path / "full.mp3", signal(sr, 1, 1.0), sr=sr, bitrate_mode="VARIABLE", xing=xing,
                    id3v2=700, id3v1=True)
    data = mp3.path.read_bytes()
    frames = l3_frames(data, mp3.audio.start)
    cuts = sorted({*range(5, len(data), 97), *(p + d for p, _ in frames for d in (0, 2)), len(data) - 60})
    for k, cut in enumerate(cuts):
        part = tmp_path / f"cut{k}.mp3"
        part.write_bytes(data[:cut])
        whole = sum(p + n <= cut for p, n in frames)
        inside = any(p < cut < p + n for p, n in frames)
        if cut <= mp3.audio.start or inside or (xing and cut < mp3.audio.stop):
            reasons = {"truncated"} if cut > mp3.audio.start else {"truncated", "empty_file", "not_audio",
                                                                    "undecodable"}  # no audio frame left
            for fn in (probe_audio, load_audio):
                with pytest.raises(AudioError) as err:
                    fn(part)
                assert err.value.reason in reasons, (cut, str(err.value))
            continue
        samples = mp3.samples if xing else whole * mp3_samples_per_frame(sr)
        assert probe_audio(part).frames == samples, cut
        assert load_audio(part)[0].shape == (1, samples), cut
