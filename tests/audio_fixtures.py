"""Generated audio for tests: good files in every format and every kind of bad file.

Import from any test module::

    from audio_fixtures import write_tone, make_bad_files

Nothing here touches the network or a data set; every file is synthesised in a temporary folder.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

#: (libsndfile format, subtype, extension) of every container/codec the tests cover.
FORMATS: list[tuple[str, str, str]] = [
    ("WAV", "PCM_U8", "wav"),
    ("WAV", "PCM_16", "wav"),
    ("WAV", "PCM_24", "wav"),
    ("WAV", "PCM_32", "wav"),
    ("WAV", "FLOAT", "wav"),
    ("WAV", "DOUBLE", "wav"),
    ("FLAC", "PCM_16", "flac"),
    ("FLAC", "PCM_24", "flac"),
    ("OGG", "VORBIS", "ogg"),
    ("MP3", "MPEG_LAYER_III", "mp3"),
    ("AU", "PCM_16", "au"),
    ("AIFF", "PCM_16", "aiff"),
]

LOSSY = frozenset({"VORBIS", "OPUS", "MPEG_LAYER_III"})

#: Sample rates (Hz) an MPEG-1/2/2.5 layer III stream can carry.
MP3_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})


def supports(fmt: str, *, sr: int, channels: int) -> bool:
    """Whether libsndfile can write ``fmt`` at this rate and channel count (MP3: <= 2 ch, <= 48 kHz)."""
    if fmt == "MP3":
        return sr in MP3_RATES and channels <= 2
    return True


def channel_freq(c: int) -> float:
    """Frequency (Hz) of the tone on channel ``c``: distinct per channel, below 4 kHz Nyquist."""
    return 300.0 + 100.0 * c


def tone(*, sr: int, channels: int = 1, duration: float = 0.5, freq: float | None = None,
         amplitude: float = 0.5) -> np.ndarray:
    """Sine tones, shape ``(n, channels)`` float32 (soundfile's layout); channel ``c`` at
    ``channel_freq(c)`` unless ``freq`` is given."""
    t = np.arange(round(sr * duration)) / sr
    freqs = [freq if freq is not None else channel_freq(c) for c in range(channels)]
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def write_tone(path: str | os.PathLike[str], *, sr: int = 16000, channels: int = 1, duration: float = 0.5,
               fmt: str = "WAV", subtype: str | None = None, freq: float | None = None,
               amplitude: float = 0.5) -> Path:
    """Write :func:`tone` to ``path`` and return it as a :class:`Path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(sr=sr, channels=channels, duration=duration, freq=freq, amplitude=amplitude),
             sr, format=fmt, subtype=subtype)
    return path


def write_array(path: str | os.PathLike[str], y: np.ndarray, *, sr: int, fmt: str = "WAV",
                subtype: str | None = "FLOAT") -> Path:
    """Write ``y`` (``(n,)``, or ``(channels, n)`` as returned by ``load_audio``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y)
    sf.write(path, y.T if y.ndim == 2 else y, sr, format=fmt, subtype=subtype)
    return path


def truncate(src: str | os.PathLike[str], dest: str | os.PathLike[str], *, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of the bytes of ``src`` to ``dest`` (a file cut in transfer)."""
    data = Path(src).read_bytes()
    dest = Path(dest)
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


class BadFile(NamedTuple):
    path: Path
    reason: str | None  # None: a good file that must load


#: Every case of :func:`make_bad_files` and the ``AudioError.reason`` it must produce; ``None``
#: marks good files. Reasons in :data:`PREPROCESS_REASONS` come from ``preprocess`` (the file
#: itself decodes fine); the others from ``load_audio``.
BAD_FILE_REASONS: dict[str, str | None] = {
    "zero_bytes": "empty_file",
    "header_only": "empty_file",
    "text_as_wav": "not_audio",
    "random_bytes_mp3": "not_audio",
    "corrupt_wav_header": "undecodable",
    "fake_m4a": "undecodable",
    "truncated_wav": "truncated",
    "truncated_aiff": "truncated",
    "truncated_au": "truncated",
    "truncated_flac": "truncated",
    "truncated_ogg": "truncated",
    "truncated_mp3": "truncated",
    "nan_float_wav": "nonfinite",
    "inf_float_wav": "nonfinite",
    "silent_wav": "silent",
    "shorter_than_10ms": "too_short",  # only with a minimum length: see PREPROCESS_PARAMS
    "directory_named_wav": "unreadable",
    "unreadable": "unreadable",
    "unicode name": None,
}

#: Reasons raised by ``preprocess`` (with :data:`PREPROCESS_PARAMS`) rather than by ``load_audio``.
PREPROCESS_REASONS = frozenset({"silent", "too_short"})

#: ``process`` params under which ``preprocess`` rejects the :data:`PREPROCESS_REASONS` cases: the
#: default (``duration.min_seconds: 0``) keeps every clip with audio, the 5 ms one too.
PREPROCESS_PARAMS = {"duration": {"min_seconds": 0.01}}

#: Cases ``probe_audio`` catches without decoding (the rest need ``load_audio``).
PROBE_DETECTS = frozenset({
    "zero_bytes", "header_only", "text_as_wav", "random_bytes_mp3", "corrupt_wav_header", "fake_m4a",
    "truncated_wav", "truncated_aiff", "truncated_au", "truncated_ogg", "truncated_mp3", "directory_named_wav",
    "unreadable",
})


def can_block_reads() -> bool:
    """``chmod 000`` only blocks reads for a non-root user."""
    return not hasattr(os, "geteuid") or os.geteuid() != 0


def make_bad_files(directory: str | os.PathLike[str]) -> dict[str, BadFile]:
    """Create every case of :data:`BAD_FILE_REASONS` in ``directory``.

    Returns ``{name: (path, expected_reason)}``. The ``unreadable`` case (``chmod 000``) is left
    out when running as root, where permissions do not block reads.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sr = 16000
    out: dict[str, BadFile] = {}

    def add(name: str, path: Path) -> None:
        out[name] = BadFile(path, BAD_FILE_REASONS[name])

    (d / "zero bytes.wav").write_bytes(b"")
    add("zero_bytes", d / "zero bytes.wav")

    sf.write(d / "header_only.wav", np.zeros((0, 1), np.float32), sr, subtype="PCM_16")
    add("header_only", d / "header_only.wav")

    (d / "text.wav").write_text("This is a text file, not audio.\n" * 40, encoding="utf-8")
    add("text_as_wav", d / "text.wav")

    # A leading zero byte so that the random content cannot start with an MPEG frame sync.
    rng = np.random.default_rng(0)
    (d / "random.mp3").write_bytes(b"\x00" + rng.bytes(8191))
    add("random_bytes_mp3", d / "random.mp3")

    # Complete RIFF structure, but a 'fmt ' chunk no decoder understands (codec 0x1234, 0 channels).
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, 0x1234, 0, 0, 0, 0, 0)
    data_chunk = struct.pack("<4sI", b"data", 200) + rng.bytes(200)
    body = b"WAVE" + fmt_chunk + data_chunk
    (d / "corrupt_header.wav").write_bytes(struct.pack("<4sI", b"RIFF", len(body)) + body)
    add("corrupt_wav_header", d / "corrupt_header.wav")

    (d / "fake.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + rng.bytes(500))
    add("fake_m4a", d / "fake.m4a")

    full = d / "_full"
    full.mkdir(exist_ok=True)
    for name, fmt, subtype, ext in [("truncated_wav", "WAV", "PCM_16", "wav"),
                                    ("truncated_aiff", "AIFF", "PCM_16", "aiff"),
                                    ("truncated_au", "AU", "PCM_16", "au"),
                                    ("truncated_flac", "FLAC", "PCM_16", "flac"),
                                    ("truncated_ogg", "OGG", "VORBIS", "ogg"),
                                    ("truncated_mp3", "MP3", "MPEG_LAYER_III", "mp3")]:
        src = write_tone(full / f"{name}.{ext}", sr=sr, channels=2, duration=1.0, fmt=fmt, subtype=subtype)
        add(name, truncate(src, d / f"{name}.{ext}", fraction=0.5))

    for name, bad in [("nan_float_wav", np.nan), ("inf_float_wav", np.inf)]:
        y = tone(sr=sr, duration=0.3)
        y[100:103] = bad
        sf.write(d / f"{name}.wav", y, sr, subtype="FLOAT")
        add(name, d / f"{name}.wav")

    sf.write(d / "silent.wav", np.zeros((sr // 2, 1), np.float32), sr, subtype="PCM_16")
    add("silent_wav", d / "silent.wav")

    add("shorter_than_10ms", write_tone(d / "short.wav", sr=sr, duration=0.005))

    (d / "dir.wav").mkdir(exist_ok=True)
    add("directory_named_wav", d / "dir.wav")

    add("unicode name", write_tone(d / "sous-dossier é/ünïcødé tone 音 (1).wav", sr=sr, channels=2, duration=0.4))

    if can_block_reads():
        locked = write_tone(d / "locked.wav", sr=sr, duration=0.2)
        locked.chmod(0)
        add("unreadable", locked)
    return out


# ---------------------------------------------------------------------------------------------
# MP3 variants: with or without a Xing/Info header, CBR/VBR, ID3v2 / ID3v1 / APEv2 tags

_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_L3_KBPS = {True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
            False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}


def mp3_samples_per_frame(sr: int) -> int:
    """Samples per channel in one Layer III frame: 1152 for MPEG-1 (32-48 kHz), else 576."""
    return 1152 if sr >= 32000 else 576


def l3_frame_bytes(header: bytes) -> int:
    """Length in bytes of the MPEG Layer III frame that starts with ``header`` (4 bytes)."""
    assert header[0] == 0xFF and header[1] & 0xE0 == 0xE0 and (header[1] >> 1) & 3 == 1, header.hex()
    version, kbps_i, rate_i, pad = (header[1] >> 3) & 3, header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    sr = _MPEG_RATES[version][rate_i]
    return (144 if version == 3 else 72) * _L3_KBPS[version == 3][kbps_i] * 1000 // sr + pad


def l3_frames(data: bytes, start: int = 0) -> list[tuple[int, int]]:
    """``(offset, length)`` of the consecutive Layer III frames from ``start`` (until a non-frame)."""
    out, pos = [], start
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] & 0xE0 == 0xE0:
        n = l3_frame_bytes(data[pos:pos + 4])
        out.append((pos, n))
        pos += n
    return out


def id3v2_tag(size: int, *, seed: int = 0) -> bytes:
    """An ID3v2.3 tag of ``size`` bytes: a title and an APIC frame of random bytes (cover art,
    whose bytes can look like MPEG frame syncs)."""
    title = b"TIT2" + struct.pack(">I", 6) + b"\0\0" + b"\0sound"
    body_size = size - 10
    art = max(body_size - len(title) - 10, 0)
    apic = b"APIC" + struct.pack(">I", art) + b"\0\0" + np.random.default_rng(seed).bytes(art) if art else b""
    body = (title + apic).ljust(body_size, b"\0")
    syncsafe = bytes((body_size >> s) & 0x7F for s in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + body


#: An ID3v1 tag: "TAG", title, artist, album (30 bytes each), year, comment (30), genre.
ID3V1_TAG = (b"TAG" + b"a title".ljust(30, b"\0") + b"an artist".ljust(30, b"\0") + bytes(30) + b"2024" + bytes(30)
             + b"\x0c")


def apev2_tag(item_bytes: int, *, seed: int = 1) -> bytes:
    """An APEv2 tag (header, one binary item of ``item_bytes``, footer), as some taggers append."""
    value = np.random.default_rng(seed).bytes(item_bytes)
    item = struct.pack("<II", len(value), 2) + b"Cover Art (Front)\0" + value
    size = len(item) + 32  # items + footer
    def block(flags: int) -> bytes:
        return b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, flags) + b"\0" * 8
    return block(0xA0000000) + item + block(0x80000000)


class Mp3(NamedTuple):
    path: Path
    samples: int        # samples per channel a complete decode gives
    frames: int         # MPEG audio frames (not counting a Xing/Info frame)
    audio: slice        # the MPEG frames within the file's bytes


def write_mp3(path: str | os.PathLike[str], y: np.ndarray, *, sr: int, bitrate_mode: str = "CONSTANT",
              compression_level: float = 0.5, xing: bool = True, id3v2: int = 0, id3v1: bool = False,
              apev2: int = 0) -> Mp3:
    """Encode ``y`` (``(n, channels)``) with libsndfile's LAME, then shape the file.

    ``xing=False`` drops the first frame, which holds the Xing/Info (and LAME) header: the file then
    has no stated length (libsndfile and mpg123 estimate one from the file size), and decoders output
    every frame (``frames * samples_per_frame`` samples, encoder delay and padding included).
    ``id3v2`` prepends an ID3v2 tag of that many bytes, ``id3v1`` appends an ID3v1 tag, ``apev2``
    appends an APEv2 tag with an item of that many bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr, format="MP3", bitrate_mode=bitrate_mode, compression_level=compression_level)
    data = path.read_bytes()
    first = l3_frames(data)[0]
    head = data[: first[1]]
    at = next(head.find(tag) for tag in (b"Xing", b"Info") if head.find(tag) > 0)
    stated = struct.unpack(">I", head[at + 8: at + 12])[0]  # frames field (flag bit 0 is set by LAME)
    assert struct.unpack(">I", head[at + 4: at + 8])[0] & 1
    stream = data if xing else data[first[1]:]
    assert len(l3_frames(stream)) == stated + xing  # the Xing frame is not an audio frame
    pre = id3v2_tag(id3v2) if id3v2 else b""
    post = (apev2_tag(apev2) if apev2 else b"") + (ID3V1_TAG if id3v1 else b"")
    path.write_bytes(pre + stream + post)
    samples = y.shape[0] if xing else stated * mp3_samples_per_frame(sr)
    return Mp3(path, samples, stated, slice(len(pre) + (first[1] if xing else 0), len(pre) + len(stream)))


# ---------------------------------------------------------------------------------------------
# Processed audio as the ``process`` stage stores it


def write_audio_store(path: str | os.PathLike[str], segments: list[np.ndarray]) -> list[int]:
    """Write processed segments to one process audio store at ``path`` (``<process_dir>/audio/<store>.npy``)
    as ``process`` writes them: float32, frames first, ``(total_samples, channels)``; each segment is
    ``(n,)`` (mono) or ``(n, channels)``, all with the same channels. Returns each segment's ``offset``
    (the ``frames`` of its index row are its ``n``)."""
    from soundstage.store import StoreWriter

    blocks = [np.asarray(s, dtype=np.float32) for s in segments]
    blocks = [b[:, None] if b.ndim == 1 else b for b in blocks]  # (n, channels)
    with StoreWriter(path, blocks[0].shape[1] if blocks else 1) as writer:
        offsets = [writer.append(b.T) for b in blocks]
    return offsets
