"""Decoding: read an audio file's header (:func:`probe_audio`) and its samples (:func:`load_audio`).

Decoding goes through libsndfile (``soundfile``), which reads WAV/RF64/W64, FLAC, Ogg (Vorbis,
Opus), MP3, AIFF, AU and more. Files it cannot open are handed to ``audioread`` when that package
has a backend for them; everything else becomes an :class:`AudioError` with a short, stable
``reason`` code, one of :data:`REASONS` (described in :data:`soundstage.rejections.REASONS`, the one
list of rejection reasons): ``not_found``, ``unreadable``, ``empty_file``, ``not_audio``,
``undecodable``, ``truncated``, ``nonfinite`` from decoding, ``silent`` and ``too_short`` from
:func:`soundstage.dsp.preprocess`.

A file is judged by what decodes. Its header's length is a reason to reject it only where the
format states the length exactly (WAV/AIFF/AU chunk sizes, a FLAC total, Ogg granule positions, an
MP3 Xing/Info/VBRI header); an MP3 without such a header is measured by walking its MPEG frames,
and a file with no stated length at all (a FLAC written as a stream) by decoding it.

Decoded audio is float32 ``(channels, n_samples)`` (the librosa convention).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf

__all__ = ["REASONS", "AudioError", "AudioInfo", "downmix_frames", "load_audio", "probe_audio"]

REASONS = frozenset({
    "not_found", "unreadable", "empty_file", "not_audio", "undecodable", "truncated", "nonfinite",
    "silent", "too_short",
})

PathLike = str | os.PathLike[str]


class AudioError(Exception):
    """An audio file (or clip) that cannot be used.

    Parameters
    ----------
    path : str or path-like or None
        The offending file; ``None`` for an in-memory clip (:func:`soundstage.dsp.preprocess`); the
        caller can attach the path with :meth:`with_path`.
    reason : str
        Machine-friendly code, one of :data:`REASONS`.
    detail : str
        Human explanation; ``str(error)`` prefixes it with the file name.
    """

    def __init__(self, path: PathLike | None, reason: str, detail: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        self.detail = detail
        # Exception pickles by re-calling cls(*args): keep args equal to the constructor's.
        super().__init__(self.path, reason, detail)

    def __str__(self) -> str:
        where = f"'{self.path}'" if self.path is not None else "audio clip"
        return f"{where}: {self.detail} [{self.reason}]"

    def with_path(self, path: PathLike) -> AudioError:
        """The same error, naming ``path``."""
        return AudioError(path, self.reason, self.detail)


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe_audio` learns from a file's header.

    Attributes
    ----------
    path : str
    sample_rate : int
        Hz.
    channels : int
    frames : int
        Samples per channel: exactly what :func:`load_audio` decodes (see :func:`probe_audio`).
    duration : float
        Seconds, ``frames / sample_rate``.
    format : str
        libsndfile major format (``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``, ``"AIFF"``, ``"AU"``...),
        or the upper-case extension when the file was read through ``audioread``.
    subtype : str
        libsndfile subtype (``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``, ``"MPEG_LAYER_III"``...),
        ``""`` through ``audioread``.
    """

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str
    subtype: str


# ---------------------------------------------------------------------------------------------
# Decoding


def probe_audio(path: PathLike) -> AudioInfo:
    """Read a file's header: rate, channels, exact length, format.

    Cheap structural checks run as well (zero bytes, unreadable, not audio, a WAV/AIFF/AU data
    chunk, an Ogg stream or an MPEG frame cut short), but nothing is decoded where the length is
    known without decoding, so a FLAC stream cut in the middle and NaN samples are only caught by
    :func:`load_audio`.

    The length is the one :func:`load_audio` decodes: the header's count where the format states
    it exactly (WAV, AIFF, AU, FLAC with a total, Ogg granule positions, MP3 with a Xing/Info/VBRI
    header); for an MP3 without such a header (whose count libsndfile only estimates from the file
    size), the MPEG frames counted in the stream times the samples per frame; when neither exists
    (a FLAC written as a stream, with no total; a free-format MP3), the file is decoded and counted.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioError
        With reason ``not_found``, ``unreadable``, ``empty_file``, ``not_audio``, ``undecodable``
        or ``truncated``.
    """
    p = os.fspath(path)
    try:
        with _opened(p) as (f, mpeg, frames):
            fmt, subtype, sr, channels = str(f.format), str(f.subtype), int(f.samplerate), int(f.channels)
            if frames is None:  # no stated or countable length: decode and count
                frames = len(_decode(p, f, mpeg, expected=None, dtype="float32"))
    except _NotOpened as exc:
        return _fallback(p, *exc.args, decode=False)[0]
    if frames == 0:
        raise AudioError(p, "empty_file", f"valid {fmt} header but no audio frames")
    return AudioInfo(p, sr, channels, frames, frames / sr, fmt, subtype)


def load_audio(path: PathLike, *, mono: bool = False) -> tuple[np.ndarray, int]:
    """Decode a whole file at its native rate.

    Parameters
    ----------
    path : str or path-like
        Any path; spaces and non-ASCII characters are fine.
    mono : bool
        Downmix while decoding: the result is bit for bit :func:`soundstage.dsp.to_mono` of the
        multichannel decode, as ``(1, n)``, at a fraction of the cost (no de-interleaving copy; 8- and
        16-bit PCM is summed as integers, exactly, before the one scaling).

    Returns
    -------
    y : np.ndarray [shape=(channels, n_samples), dtype=float32]
        Samples in [-1, 1] for integer formats (float files are returned as stored). Mono files
        give a ``(1, n)`` view of the decode buffer; multichannel files cost one copy to
        de-interleave (``(1, n)`` with ``mono``). ``n_samples`` is the length
        :func:`probe_audio` reports.
    sr : int
        Sample rate in Hz.

    Raises
    ------
    AudioError
        ``not_found``, ``unreadable``, ``empty_file``, ``not_audio``, ``undecodable``,
        ``truncated`` (the file holds less than its header states, libsndfile fails mid-stream,
        an MPEG stream ends inside a frame, or fewer samples decode than its whole MPEG frames
        hold) or ``nonfinite``.

    Notes
    -----
    libsndfile never decodes past the frame count it announced. For an MP3 without a
    Xing/Info/VBRI header that count is an estimate from the file size, too high with a large
    ID3v2 tag and too low for a VBR stream that starts loud; such a file is decoded from its
    MPEG frames alone (tags dropped), followed by silent frames that lift the estimate above the
    real length, and exactly the samples of its own frames are kept.
    """
    p = os.fspath(path)
    try:
        with _opened(p) as (f, mpeg, expected):
            channels, sr, fmt, subtype = int(f.channels), int(f.samplerate), str(f.format), str(f.subtype)
            if expected is not None and expected * channels * 4 > _MAX_DECODE_BYTES:
                raise AudioError(p, "undecodable",
                                 f"header announces {expected} frames x {channels} channels: implausibly large")
            downmix = mono and channels > 1
            # libsndfile turns 8/16-bit PCM into float as int16 / 32768: integers are exact to sum.
            dtype = "int16" if downmix and subtype in _SHORT_PCM and channels <= 256 else "float32"
            data = _decode(p, f, mpeg, expected=expected, dtype=dtype)
    except _NotOpened as exc:
        _, decoded = _fallback(p, *exc.args, decode=True)
        assert decoded is not None
        y, sr = decoded
        return (downmix_frames(y.T)[np.newaxis] if mono else y), sr
    n = data.shape[0]
    if n == 0:
        raise AudioError(p, "empty_file", f"valid {fmt} header but no audio frames decode")
    if subtype in _FLOAT_SUBTYPES and not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(p, "nonfinite", f"{bad} NaN or infinite sample(s) in a {subtype} {fmt} file")
    if downmix:
        return downmix_frames(data)[np.newaxis], sr
    return (data.reshape(1, n) if channels == 1 else np.ascontiguousarray(data.T)), sr


class _NotOpened(Exception):
    """libsndfile cannot open the file: ``args`` are the sniffed kind and its error, for :func:`_fallback`."""


@contextmanager
def _opened(p: str) -> Iterator[tuple[sf.SoundFile, _MpegStream | None, int | None]]:
    """What probe and load share: :func:`_inspect`'s checks, then the open file, its MPEG frame walk
    and :func:`_exact_frames`. Raises ``empty_file`` for a header without frames and
    :class:`_NotOpened` when libsndfile cannot open the file."""
    kind, mpeg = _inspect(p)
    try:
        f = _open(p, mpeg)
    except (RuntimeError, OSError) as exc:
        raise _NotOpened(kind, exc) from None
    with f:
        if int(f.frames) == 0:
            raise AudioError(p, "empty_file", f"valid {f.format} header but no audio frames")
        if f.format == "MP3" and kind != "MP3":  # MPEG frames after bytes the sniffer does not know
            mpeg = _scan_file(p)
        yield f, mpeg, _exact_frames(f, mpeg)


def _open(p: str, mpeg: _MpegStream | None) -> sf.SoundFile:
    """``soundfile.SoundFile(p)``; an MP3 that mpg123 refuses to open although its frames are
    whole (a one-frame stream: mpg123 wants a second header) is opened as :func:`_padded_stream`."""
    try:
        return sf.SoundFile(p)
    except (RuntimeError, OSError):
        if mpeg is None or mpeg.stated is not None or not mpeg.frames:
            raise
    return sf.SoundFile(io.BytesIO(_padded_stream(p, mpeg)))


def _exact_frames(f: sf.SoundFile, mpeg: _MpegStream | None) -> int | None:
    """Samples per channel that a whole decode of ``f`` gives, or ``None`` when only decoding tells.

    libsndfile's count is exact where the format states it (WAV/AIFF/AU chunk sizes, FLAC's total,
    Ogg granule positions, an MP3's Xing/Info/VBRI header). An MP3 without such a header gets an
    estimate from the file size: its own frames are counted instead. ``None``: the length is
    unknown (``SF_COUNT_MAX``: a FLAC streamed without a total), or an MP3's frames could not be
    walked (free format).
    """
    frames = int(f.frames)
    if frames >= _UNKNOWN_LENGTH:
        return None
    if str(f.format) != "MP3":
        return frames
    if mpeg is None:
        return None
    return frames if mpeg.stated is not None else mpeg.frames * mpeg.samples_per_frame


def _decode(p: str, f: sf.SoundFile, mpeg: _MpegStream | None, *, expected: int | None,
            dtype: str) -> np.ndarray:
    """Every frame of ``f``, ``(n, channels)`` of ``dtype``; ``expected`` is :func:`_exact_frames`.

    Raises ``truncated`` when fewer than ``expected`` frames decode or libsndfile fails mid-stream.
    """
    fmt, channels = str(f.format), int(f.channels)
    if expected == 0:
        return np.empty((0, channels), dtype)
    try:
        if expected is None:
            return _read_to_end(f, channels, dtype)
        if fmt == "MP3" and mpeg is not None and mpeg.stated is None:
            # The estimate libsndfile reads up to is wrong either way: decode the frames alone,
            # followed by silent frames that lift the estimate above them, and keep their samples.
            with sf.SoundFile(io.BytesIO(_padded_stream(p, mpeg))) as g:
                data = g.read(expected, dtype=dtype, always_2d=True, out=np.empty((expected, channels), dtype))
            if len(data) < expected:
                raise AudioError(p, "truncated",
                                 f"MP3 stream decodes to {len(data)} samples but its {mpeg.frames} whole "
                                 f"MPEG frames hold {expected} (a damaged frame)")
            return data
        data = f.read(expected, dtype=dtype, always_2d=True, out=np.empty((expected, channels), dtype))
    except (RuntimeError, OSError) as exc:
        raise AudioError(p, "truncated", f"{fmt} stream fails while decoding: {_sf_message(exc)}") from None
    if len(data) < expected:
        raise AudioError(p, "truncated", f"{fmt} header announces {expected} frames but only {len(data)} could "
                                         "be decoded")
    return data


def _read_to_end(f: sf.SoundFile, channels: int, dtype: str, block: int = 1 << 16) -> np.ndarray:
    """Decode until libsndfile stops, for a length it does not know: ``(n, channels)`` of ``dtype``."""
    # soundfile's read() seeks to its idea of the new position after each block, which libsndfile
    # refuses when the length is unknown (SF_COUNT_MAX): read through libsndfile's own call.
    read = getattr(sf._snd, "sf_readf_short" if dtype == "int16" else "sf_readf_float")
    ctype = "short*" if dtype == "int16" else "float*"
    chunks = []
    while True:
        buf = np.empty((block, channels), dtype)
        n = int(read(f._file, sf._ffi.cast(ctype, buf.ctypes.data), block))
        if f._errorcode:
            raise sf.LibsndfileError(f._errorcode)
        if n <= 0:
            break
        chunks.append(buf[:n])
    return np.concatenate(chunks) if chunks else np.empty((0, channels), dtype)


_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_SHORT_PCM = frozenset({"PCM_16", "PCM_S8", "PCM_U8"})
_UNKNOWN_LENGTH = 2**63 - 1  # SF_COUNT_MAX: what libsndfile announces when it does not know the length


def downmix_frames(frames: np.ndarray) -> np.ndarray:
    """Mono float32 ``(n,)`` of interleaved ``(n, channels)`` samples (a WAV's frame layout).

    Bit for bit :func:`soundstage.dsp.to_mono` of the de-interleaved ``(channels, n)`` array (which
    calls it), without the transposing copy: the same float32 operations in the same order (first
    two channels added, the rest accumulated, then one multiplication by ``1 / channels``), column
    by column. ``int16`` samples (8/16-bit PCM as libsndfile decodes them, at most 256 channels)
    are summed exactly and scaled by ``2 ** -15`` together with ``1 / channels``: each
    ``x / 32768`` and every partial sum of them is exact in float32, so the result is the
    same number as downmixing the float decode. The one downmix of processed multichannel
    audio (features, augmentation) and of decoding with ``load_audio(mono=True)``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] < 1:
        raise ValueError(f"frames: expected shape (n, channels), got {frames.shape}")
    channels = frames.shape[1]
    if frames.dtype == np.int16 and channels > 256:
        frames = frames.astype(np.float32) * np.float32(1 / 32768)
    if channels == 1:
        out = frames[:, 0].astype(np.float32)
    else:
        out = np.add(frames[:, 0], frames[:, 1], dtype=np.float32)
        for c in range(2, channels):
            out += frames[:, c]
    scale = np.float32(1.0 / channels)
    if frames.dtype == np.int16:
        scale *= np.float32(1 / 32768)  # a power of two: exact
    if scale != 1:
        out *= scale
    return out
_MAX_DECODE_BYTES = 1 << 34  # 16 GiB of float32: beyond that a header is lying, not describing


def _sf_message(exc: BaseException) -> str:
    return str(getattr(exc, "error_string", None) or exc).strip()


def _inspect(p: str) -> tuple[str | None, _MpegStream | None]:
    """Pre-checks shared by probe and load: ``(sniffed container kind, MPEG frame walk)``.

    Raises ``not_found``, ``unreadable``, ``empty_file`` and (for WAV/AIFF/AU/Ogg/MP3, whose
    structure can be checked without decoding) ``truncated``. The frame walk is ``None`` unless
    the file is an MPEG audio stream whose frames were found.
    """
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise AudioError(p, "not_found", f"broken symbolic link (to {os.readlink(p)!r}, which does "
                                             "not exist)") from None
        raise AudioError(p, "not_found", "no such file") from None
    except OSError as exc:
        raise AudioError(p, "unreadable", f"cannot stat: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(p, "unreadable", "not a regular file")
    size = st.st_size
    if size == 0:
        raise AudioError(p, "empty_file", "file is empty (0 bytes)")
    mpeg = None
    try:
        with open(p, "rb") as fh:
            head = fh.read(64)
            kind = _sniff(head)
            data = head + fh.read() if kind == "MP3" else b""
            problem = _STRUCTURE_CHECKS[kind](fh, head, size) if kind in _STRUCTURE_CHECKS else None
    except PermissionError:
        raise AudioError(p, "unreadable", "permission denied") from None
    except OSError as exc:
        raise AudioError(p, "unreadable", f"cannot read: {exc.strerror or exc}") from None
    if problem is not None:
        raise AudioError(p, "truncated", problem)
    if kind == "MP3":
        mpeg = _scan_file(p, data)
    return kind, mpeg


def _sniff(head: bytes) -> str | None:
    """Container kind from the first bytes, or ``None`` when it is not recognisably audio."""
    magic4 = head[:4]
    if magic4 in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return "WAV"
    if magic4 in (b"RF64", b"BW64"):
        return "RF64"
    if magic4 == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    simple = {b".snd": "AU", b"fLaC": "FLAC", b"OggS": "OGG", b"caff": "CAF", b"riff": "W64",
              b"NIST": "NIST", b"0&\xb2u": "ASF/WMA", b"#!AM": "AMR", b"MAC ": "APE", b"wvpk": "WavPack"}
    if magic4 in simple:
        return simple[magic4]
    if head[:3] == b"ID3":
        return "MP3"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; layer bits 00 with sync 0xFFF is an AAC ADTS stream.
        return "AAC" if head[1] & 0xF6 == 0xF0 else "MP3"
    return None


def _chunk_problem(fh: BinaryIO, size: int, *, endian: str, audio_chunk: bytes, fmt: str,
                   unknown_sizes: tuple[int, ...] = ()) -> str | None:
    """Walk the chunks after a 12-byte RIFF/FORM header: is the ``audio_chunk`` (or a chunk before it)
    cut short? A size in ``unknown_sizes`` is one a streaming writer left unknown."""
    name = audio_chunk.decode("ascii")
    pos = 12
    for _ in range(10_000):
        if pos + 8 > size:
            return f"{fmt} header ends after {size} bytes before any {name} chunk"
        fh.seek(pos)
        cid, csize = struct.unpack(endian + "4sI", fh.read(8))
        if cid == audio_chunk:
            have = size - pos - 8
            if csize in unknown_sizes or csize <= have:
                return None
            return f"{fmt} header declares {csize} bytes of audio data but only {have} are present"
        pos += 8 + csize + (csize & 1)
    return None


def _riff_problem(fh: BinaryIO, head: bytes, size: int) -> str | None:
    """Is the WAV ``data`` chunk (or a chunk before it) cut short?"""
    return _chunk_problem(fh, size, endian="<" if head[:4] == b"RIFF" else ">", audio_chunk=b"data", fmt="WAV",
                          unknown_sizes=(0, 0xFFFFFFFF))


def _aiff_problem(fh: BinaryIO, head: bytes, size: int) -> str | None:
    """Is the AIFF ``SSND`` chunk (or a chunk before it) cut short?"""
    return _chunk_problem(fh, size, endian=">", audio_chunk=b"SSND", fmt="AIFF")


def _au_problem(fh: BinaryIO, head: bytes, size: int) -> str | None:
    if len(head) < 12:
        return f"AU header needs 24 bytes, file has {size}"
    offset, nbytes = struct.unpack(">II", head[4:12])
    if nbytes != 0xFFFFFFFF and offset + nbytes > size:
        return f"AU header declares {nbytes} bytes of audio data but only {max(size - offset, 0)} are present"
    return None


def _ogg_problem(fh: BinaryIO, head: bytes, size: int) -> str | None:
    """Walk the Ogg pages: the last one must be complete and carry the end-of-stream flag."""
    pos, flags = 0, 0
    while pos < size:
        fh.seek(pos)
        header = fh.read(27)
        if len(header) < 27:
            return f"Ogg page at byte {pos} is cut short (file ends at {size})"
        if header[:4] != b"OggS":
            return None  # not a page boundary: corrupt rather than short; libsndfile will judge
        flags, n_seg = header[5], header[26]
        lacing = fh.read(n_seg)
        if len(lacing) < n_seg:
            return f"Ogg page at byte {pos} is cut short (file ends at {size})"
        pos += 27 + n_seg + sum(lacing)
    if pos > size:
        return f"last Ogg page needs {pos} bytes but the file ends at {size}"
    if not flags & 0x04:
        return "Ogg stream has no end-of-stream page (file cut after a page boundary)"
    return None


_STRUCTURE_CHECKS = {"WAV": _riff_problem, "AIFF": _aiff_problem, "AU": _au_problem, "OGG": _ogg_problem}


# ---------------------------------------------------------------------------------------------
# MPEG audio streams (.mp3): libsndfile knows their length only from a Xing/Info/VBRI header


@dataclass(frozen=True)
class _MpegStream:
    """What walking the frame headers of an MPEG audio file finds (nothing is decoded).

    ``frames`` audio frames (a Xing/Info/VBRI frame is not one) of ``samples_per_frame`` samples
    each, from byte ``start`` (the first frame) to ``end`` (tags and other bytes before and after
    are outside);
    ``stated``: the frame count a Xing/Info/VBRI header states, ``None`` without such a header;
    ``largest``: the largest frame in bytes; ``header``: the last frame's 4 header bytes.
    """

    frames: int
    samples_per_frame: int
    start: int
    end: int
    stated: int | None
    largest: int
    header: bytes


_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # version bits
_MPEG_KBPS = {  # (MPEG-1, layer): kbps by bitrate index 1..14 (ISO 11172-3, 13818-3)
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}


def _mpeg_frame(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """``(bytes, samples per frame, stream key)`` of the MPEG audio frame header at ``pos``.

    ``None`` when there is no valid header (no sync, a reserved field, free format). The key holds
    the fields that stay fixed within one stream (version, layer, sample rate).
    """
    if pos + 4 > len(buf) or buf[pos] != 0xFF or buf[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = buf[pos + 1], buf[pos + 2]
    version, layer, kbps_i, rate_i = (b1 >> 3) & 3, 4 - ((b1 >> 1) & 3), b2 >> 4, (b2 >> 2) & 3
    if version == 1 or layer == 4 or kbps_i in (0, 15) or rate_i == 3:
        return None
    mpeg1, sr, pad = version == 3, _MPEG_RATES[version][rate_i], (b2 >> 1) & 1
    bitrate = 1000 * _MPEG_KBPS[(mpeg1, layer)][kbps_i - 1]
    if layer == 1:
        return (12 * bitrate // sr + pad) * 4, 384, (b1 & 0xFE) << 8 | b2 & 0x0C
    spf = 1152 if mpeg1 or layer == 2 else 576
    return spf // 8 * bitrate // sr + pad, spf, (b1 & 0xFE) << 8 | b2 & 0x0C


def _stated_frames(buf: bytes, pos: int) -> int | None:
    """Frame count stated by a Xing/Info or VBRI header in the frame at ``pos``, else ``None``.

    A Xing/Info header without a frame count (flag bit 0 clear) states ``-1``: it still marks the
    frame as not audio and libsndfile still trusts it.
    """
    b1, b3 = buf[pos + 1], buf[pos + 3]
    mpeg1, mono = (b1 >> 3) & 3 == 3, b3 >> 6 == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    xing = pos + 4 + (0 if b1 & 1 else 2) + side_info  # after the header, CRC and side information
    if buf[xing: xing + 4] in (b"Xing", b"Info") and len(buf) >= xing + 12:
        (flags,) = struct.unpack(">I", buf[xing + 4: xing + 8])
        return struct.unpack(">I", buf[xing + 8: xing + 12])[0] if flags & 1 else -1
    if buf[pos + 36: pos + 40] == b"VBRI" and len(buf) >= pos + 54:
        return struct.unpack(">I", buf[pos + 50: pos + 54])[0]
    return None


def _next_frame(buf: bytes, pos: int, end: int, key: int | None) -> int | None:
    """The first offset in ``[pos, end)`` where a frame starts that is followed by another one of
    the same stream (or ends exactly at ``end``), as a decoder resynchronises; else ``None``.

    A valid header right at ``pos`` (where the audio starts, after an ID3v2 tag) needs no
    confirmation: the file may be cut inside that frame or the next one's header.
    """
    at = pos
    while (pos := buf.find(b"\xff", pos, end)) >= 0:
        here = _mpeg_frame(buf, pos)
        if here is not None and key in (None, here[2]):
            after = pos + here[0]
            following = _mpeg_frame(buf, after)
            if after == end or (following is not None and following[2] == here[2]) or (pos == at and after > end - 4):
                return pos
        pos += 1
    return None


def _trailing_tags(buf: bytes, start: int) -> int:
    """Where the audio ends: before an ID3v1 tag and an APEv2 tag at the end of the file."""
    end = len(buf)
    if end - 128 >= start and buf[end - 128: end - 125] == b"TAG":
        end -= 128
    if end - 32 >= start and buf[end - 32: end - 24] == b"APETAGEX":
        size, flags = struct.unpack("<II", buf[end - 20: end - 12])
        end -= size + (32 if flags & 0x80000000 else 0)  # the footer counts itself, not the header
    return max(end, start)


def _scan_mpeg(buf: bytes) -> tuple[_MpegStream | None, str | None]:
    """Walk the frames of an MPEG audio file: ``(stream, problem)``.

    ``stream`` is ``None`` when no frame is found (free format, or not MPEG after all: libsndfile
    decides). ``problem`` says why the file is cut short: it ends inside a frame, or holds fewer
    frames than its Xing/Info header states.
    """
    start = 0
    if buf[:3] == b"ID3" and len(buf) >= 10:  # ID3v2: 10-byte header, syncsafe size, optional footer
        size = (buf[6] & 0x7F) << 21 | (buf[7] & 0x7F) << 14 | (buf[8] & 0x7F) << 7 | buf[9] & 0x7F
        start = 10 + size + (10 if buf[5] & 0x10 else 0)
    end = _trailing_tags(buf, start)
    pos = _next_frame(buf, start, end, None)
    if pos is None:
        cut = 0 < end - start < 4 and buf[start] == 0xFF  # the first frame's header itself is cut
        return None, (f"MPEG stream ends inside its first frame header at byte {start}" if cut else None)
    first, start = _mpeg_frame(buf, pos), pos
    assert first is not None
    stated = _stated_frames(buf, pos) if (buf[pos + 1] >> 1) & 3 == 1 else None  # layer III only
    spf, key, largest = first[1], first[2], 0
    if stated is not None:
        pos += first[0]  # the header's own frame is not audio
    frames, last, problem = 0, pos, None
    while pos < end:
        frame = _mpeg_frame(buf, pos)
        if frame is None or frame[2] != key:
            if end - pos < 4 and buf[pos] == 0xFF:
                problem = f"MPEG stream ends inside the frame header at byte {pos} (file ends at {end})"
                break
            resync = _next_frame(buf, pos + 1, end, key)  # junk between frames: skipped, as mpg123 does
            if resync is None:
                break  # trailing bytes that are no frame (an unknown tag): the stream ends here
            pos = resync
            continue
        if pos + frame[0] > end:
            problem = (f"MPEG stream ends inside a frame: the frame at byte {pos} needs {frame[0]} bytes, "
                       f"{end - pos} are left (file cut short)")
            break
        frames, last, largest = frames + 1, pos, max(largest, frame[0])
        pos += frame[0]
    if problem is None and stated is not None and 0 <= frames < stated:
        problem = (f"MP3 Xing/Info header states {stated} frames but only {frames} whole frames follow "
                   "(file cut short)")
    stream = _MpegStream(frames, spf, start, min(pos, end), stated, largest, bytes(buf[last: last + 4]))
    return stream, problem


def _scan_file(p: str, data: bytes | None = None) -> _MpegStream | None:
    """:func:`_scan_mpeg` of the file ``p`` (or of its bytes ``data``); a cut stream is ``truncated``."""
    if data is None:
        try:
            with open(p, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise AudioError(p, "unreadable", f"cannot read: {exc.strerror or exc}") from None
    stream, problem = _scan_mpeg(data)
    if problem is not None:
        raise AudioError(p, "truncated", problem)
    return stream


def _padded_stream(p: str, mpeg: _MpegStream) -> bytes:
    """The file's MPEG frames, without the tags or other bytes around them, then silent frames.

    The silent frames (the last frame's header without CRC or padding; zero side information:
    no reservoir, no spectral data) lift mpg123's length estimate, ``file size / first frame size
    * samples per frame``, above the real length, so that libsndfile decodes every real frame.
    """
    with open(p, "rb") as fh:
        fh.seek(mpeg.start)
        stream = fh.read(mpeg.end - mpeg.start)
    header = bytes((0xFF, mpeg.header[1] | 0x01, mpeg.header[2] & 0xFD, mpeg.header[3]))
    size = _mpeg_frame(header, 0)
    assert size is not None
    silent = header + bytes(size[0] - 4)
    need = (mpeg.frames + 2) * (mpeg.largest + 4) - len(stream)  # the estimate's frame size <= largest + 4
    return stream + silent * (max(need, 0) // len(silent) + 2)


def _fallback(p: str, kind: str | None, exc: BaseException,
              *, decode: bool) -> tuple[AudioInfo, tuple[np.ndarray, int] | None]:
    """libsndfile could not open ``p``: try audioread, else raise a classified AudioError."""
    message = _sf_message(exc)
    try:
        return _audioread(p, decode=decode)
    except _NoFallback as why:
        tried = f"; {why}"
    if kind is None:
        raise AudioError(p, "not_audio", f"content is not a recognised audio format{tried}") from None
    readable = ", ".join(sorted(sf.available_formats()))
    raise AudioError(
        p, "undecodable",
        f"looks like {kind} but cannot be decoded (libsndfile {sf.__libsndfile_version__}: {message}){tried}. "
        f"Readable formats: {readable}",
    ) from None


class _NoFallback(Exception):
    pass


def _audioread(p: str, *, decode: bool) -> tuple[AudioInfo, tuple[np.ndarray, int] | None]:
    with warnings.catch_warnings():  # its raw backend imports aifc/sunau, deprecated in 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioread
        except ImportError:
            raise _NoFallback("audioread is not installed") from None
        backends = audioread.available_backends()
        try:
            with audioread.audio_open(p, backends=backends) as f:
                sr, channels = int(f.samplerate), int(f.channels)
                chunks = [np.frombuffer(b, dtype="<i2") for b in f] if decode else []
                duration = float(f.duration)
        except Exception as exc:  # noqa: BLE001 - every backend raises its own types
            names = ", ".join(b.__name__ for b in backends) or "none"
            raise _NoFallback(f"audioread (backends: {names}) cannot decode it either "
                              f"({type(exc).__name__})") from None
    ext = os.path.splitext(p)[1].lstrip(".").upper()
    if not decode:
        frames = round(duration * sr)
        if frames == 0:
            raise AudioError(p, "empty_file", "no audio frames")
        return AudioInfo(p, sr, channels, frames, duration, ext, ""), None
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype="<i2")
    pcm = pcm[: pcm.size - pcm.size % channels]
    if pcm.size == 0:
        raise AudioError(p, "empty_file", "no audio frames")
    y = np.ascontiguousarray(pcm.reshape(-1, channels).T, dtype=np.float32)
    y *= np.float32(1 / 32768)
    info = AudioInfo(p, sr, channels, y.shape[1], y.shape[1] / sr, ext, "")
    return info, (y, sr)
