"""Sliding-window predictions on long files and live streams (``soundstage predict --window``).

:func:`iter_windows` reads a WAV/FLAC file or stream block by block (memory flat in its length) and
predicts each window of ``window`` seconds every ``hop`` seconds as soon as its last sample has
been read. Each window is predicted exactly as a clip of the same samples would be by
:func:`soundstage.predict.predict_file`: its samples, at the input's native rate, go through the
bundle's whole chain (:func:`soundstage.predict.predict_samples`: preprocess — resampling, trim,
normalization, pad or segments included — then features, standardization and model). Resampling
is therefore per window, not per stream: a stream-level resampler would give the samples near a
window's edges other values than the cut clip has.

Windows, in samples of the native rate ``sr``: ``win = round(window * sr)``, ``hop =
round(hop * sr)``; window ``k`` holds samples ``[k * hop, k * hop + win)``. The final partial
window follows what the bundle does with a short clip, as ``process`` segments a clip
(:func:`soundstage.dsp.segment`): when the full windows do not reach the end, one more window
starts at the next hop and holds the samples left; it is predicted as a clip of that length,
so the bundle's ``process.duration`` decides — ``none`` keeps it as it is, ``fixed`` / ``segment``
with ``short: pad`` pad it, and it is dropped when the bundle rejects it (shorter than
``min_seconds``, or ``short: reject``). A window that the chain rejects (``silent`` — nothing
above -120 dBFS, ``too_short`` after trimming) gets no result; ``on_skip`` hears about it. Before
the first window, the chain is run once on a window of generated noise, so that the compilation of a
Keras model's first call (most of a second) is no window's latency.

Streams: libsndfile reads the input through a file object (:class:`_Reader`) that also works on
pipes, which cannot seek: the bytes read while the header is parsed are kept so that libsndfile
can seek back, and a seek far past them (libsndfile looks for chunks after a WAV's audio data)
reads as the end of the stream instead of consuming it. A WAV header written by a program that
could not seek back to fill in the length (``sox ... -t wav -``, ``ffmpeg ... -f wav -``,
``arecord``) states a data length of 0 or a placeholder of about 2 GiB (sox's ``0x7FFFF000``,
``0xFFFFFFFF``): such a stream is read until it ends (its length is read as ``0xFFFFFFFF``, which
libsndfile takes for "unknown"). libsndfile still stops a WAV stream after 4 GiB of audio data
(the header's 32 bits: 37 hours of 16 kHz 16-bit mono, 6.7 hours of 44.1 kHz 16-bit stereo): use
FLAC for longer live streams. A WAV stream hands over each sample as it arrives; a FLAC stream,
each FLAC frame.
"""

from __future__ import annotations

import array
import csv
import io
import json
import math
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
import soundfile as sf

from soundstage.bundle import Bundle
from soundstage.decode import AudioError, downmix_frames
from soundstage.predict import predict_samples

__all__ = ["BLOCK_FRAMES", "FORMATS", "Event", "WindowResult", "aggregate", "iter_events", "iter_timed_windows",
           "iter_windows", "merge_events", "predict_windows"]

#: Most frames read from the input at once: the memory of :func:`iter_windows` is about
#: ``window + BLOCK_FRAMES`` frames (float32), whatever the input's length.
BLOCK_FRAMES = 1 << 15

_UNKNOWN_LENGTH = 2**63 - 1  # SF_COUNT_MAX: libsndfile's frame count for a stream of unknown length
_FAKE_END = 1 << 62  # the end of a pipe, as libsndfile is told: far away
_MAX_SKIP = 1 << 20  # a forward seek in a pipe reads at most this far ahead; beyond, the stream "ends" there
_MAX_HEAD = 16 << 20  # bytes of a pipe kept while libsndfile parses the header
_READ_CHUNK = 1 << 16  # bytes per read when skipping or parsing a header


def _wav_unknown_size(size: int) -> bool:
    """A WAV data size that a writer to a pipe left unknown: 0, or a placeholder of about 2 GiB and
    more (sox: ``0x7FFFF000`` rounded down to whole frames; arecord: ``0x7FFFFF00``; ffmpeg and others:
    ``0xFFFFFFFF``). Such an input is not called truncated when it ends earlier (nor, so, is a real
    WAV of 2 GiB and more)."""
    return size == 0 or size >= 0x7FFEF000


@dataclass(frozen=True)
class WindowResult:
    """The prediction of one window.

    Attributes
    ----------
    start, end : float
        Seconds from the start of the input (the native-rate sample indices over the rate).
    label : str
        The most probable label.
    score : float
        Its probability.
    probs : np.ndarray [shape=(n_labels,)]
        Class probabilities in ``bundle.labels`` order.
    """

    start: float
    end: float
    label: str
    score: float
    probs: np.ndarray


@dataclass(frozen=True)
class Event:
    """A run of consecutive windows with one label: from the first's start to the last's end
    (seconds); ``score`` is the mean of their scores."""

    start: float
    end: float
    label: str
    score: float


# ---------------------------------------------------------------------------------------------
# Reading


class _Reader(io.RawIOBase):
    """The file object libsndfile reads ``raw`` through (soundfile's virtual IO).

    On a seekable ``raw`` (a file, ``BytesIO``) it passes reads and seeks through, from the position
    ``raw`` had. On a pipe it keeps what was read while ``header`` is set (libsndfile seeks back
    while it parses the header), serves a seek forward of up to ``_MAX_SKIP`` bytes by reading
    ahead (never past the start of a WAV's audio data), and answers a read beyond that as the end
    of the stream, without consuming it; the stream's length is ``_FAKE_END``. A read fills its
    buffer unless the stream ends: a short read would cut a sample in two. ``patches`` (offset →
    bytes) replace header bytes as they are read.
    """

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw
        try:
            self.pipe = not raw.seekable()
        except (AttributeError, OSError, ValueError):
            self.pipe = True
        self.base = 0 if self.pipe else raw.tell()
        self.pos = 0  # where libsndfile reads next
        self.real = 0  # pipe: bytes consumed from raw
        self.kept = bytearray()  # pipe: bytes [kept_start, real) of the stream
        self.kept_start = 0
        self.header = True
        self.data_start: int | None = None  # a WAV's audio data: no seek past it reads ahead while parsing
        self.eof = False
        self.patches: dict[int, bytes] = {}

    # -- io.RawIOBase
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            target = (_FAKE_END if self.pipe else self.raw.seek(0, io.SEEK_END) - self.base) + offset
        else:
            target = offset + (self.pos if whence == io.SEEK_CUR else 0)
        # A seek back before what a pipe kept cannot be served: the position stays, libsndfile sees it.
        if target >= (self.kept_start if self.pipe else 0):
            self.pos = target
            if not self.pipe:
                self.raw.seek(self.base + target)
        return self.pos

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        start = self.pos
        n = self._read_pipe(view) if self.pipe else self._fill(view)
        if not self.pipe:
            self.pos += n
        for at, data in self.patches.items():  # header bytes replaced while they are read
            lo, hi = max(at, start), min(at + len(data), start + n)
            if lo < hi:
                view[lo - start: hi - start] = data[lo - at: hi - at]
        return n

    # -- internals
    def _fill(self, view: memoryview) -> int:
        """Read from ``raw`` until ``view`` is full or the stream ends."""
        got = 0
        while got < len(view):
            if hasattr(self.raw, "readinto"):
                k = self.raw.readinto(view[got:]) or 0
            else:
                data = self.raw.read(len(view) - got) or b""
                k = len(data)
                view[got: got + k] = data
            if k == 0:
                self.eof = True
                break
            got += k
        return got

    def _take(self, n: int, view: memoryview | None = None) -> int:
        """Consume ``n`` bytes of the pipe into ``view`` (or nowhere), kept while parsing the header."""
        if view is None:
            view = memoryview(bytearray(min(n, _READ_CHUNK)))
            done = 0
            while done < n:
                k = self._take(min(n - done, len(view)), view)
                if k == 0:
                    break
                done += k
            return done
        k = self._fill(view[:n])
        if self.header:
            self.kept += view[:k]
        self.real += k
        return k

    def _read_pipe(self, view: memoryview) -> int:
        out = 0
        while out < len(view):
            if self.pos < self.real:  # kept bytes
                i = self.pos - self.kept_start
                chunk = self.kept[i: i + len(view) - out]
                view[out: out + len(chunk)] = chunk
                out += len(chunk)
                self.pos += len(chunk)
                continue
            gap = self.pos - self.real
            past_data = self.header and self.data_start is not None and self.pos > self.data_start
            if gap > _MAX_SKIP or (gap and past_data) or (self.header and len(self.kept) + gap > _MAX_HEAD):
                break  # libsndfile looking far ahead (past a WAV's data): the stream "ends" here
            if gap and self._take(gap) < gap:
                break
            k = self._take(len(view) - out, view[out:])
            if k == 0:
                break
            out += k
            self.pos += k
        if not self.header and self.kept and self.pos >= self.real:
            self.kept = bytearray()
            self.kept_start = self.real
        return out

    def peek_at(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (fewer at the end), without moving; a pipe is consumed and kept."""
        if not self.pipe:
            self.raw.seek(self.base + offset)
            buf = bytearray(n)
            k = self._fill(memoryview(buf))
            self.raw.seek(self.base + self.pos)
            return bytes(buf[:k])
        if offset + n > self.real:
            self._take(offset + n - self.real)
        i = offset - self.kept_start
        return bytes(self.kept[i: i + n])

    def end_header(self) -> None:
        """libsndfile has parsed the header: keep only what it has still to read."""
        self.header = False
        if self.pipe:
            drop = max(0, self.pos - self.kept_start)
            del self.kept[:drop]
            self.kept_start += drop


@dataclass
class _WavData:
    offset: int  # bytes before the data chunk's payload
    size: int  # as the header states it


def _scan_wav(reader: _Reader) -> _WavData | None:
    """Find a RIFF/RIFX WAV's ``data`` chunk. A size a streaming writer left unknown
    (:func:`_wav_unknown_size`) is read as ``0xFFFFFFFF``: libsndfile reads 0 as "no data", and stops
    a stream at the size its header states. ``None`` when not a WAV or no data chunk within
    ``_MAX_HEAD`` bytes."""
    head = reader.peek_at(0, 12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    endian = "<" if head[:4] == b"RIFF" else ">"
    pos = 12
    while pos <= _MAX_HEAD:
        chunk = reader.peek_at(pos, 8)
        if len(chunk) < 8:
            return None
        cid, size = struct.unpack(endian + "4sI", chunk)
        if cid == b"data":
            if _wav_unknown_size(size) and size != 0xFFFFFFFF:
                unknown = struct.pack(endian + "I", 0xFFFFFFFF)
                reader.patches[pos + 4] = unknown
                if struct.unpack(endian + "I", head[4:8])[0] == 0:
                    reader.patches[4] = unknown
            reader.data_start = pos + 8
            return _WavData(pos + 8, size)
        pos += 8 + size + (size & 1)
    return None


def _source_name(source: str | Path | BinaryIO) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


@contextmanager
def _open_raw(source: str | Path | BinaryIO, name: str) -> Iterator[Any]:
    if not isinstance(source, (str, os.PathLike)):
        if not hasattr(source, "read"):
            raise TypeError(f"source must be a path or a binary file object, got {type(source).__name__}")
        yield source
        return
    try:
        fh = open(source, "rb")  # noqa: SIM115 - closed below, after the generator is done with it
    except FileNotFoundError:
        raise AudioError(name, "not_found", "no such file") from None
    except IsADirectoryError:
        raise AudioError(name, "unreadable", "not a regular file") from None
    except PermissionError:
        raise AudioError(name, "unreadable", "permission denied") from None
    except OSError as exc:
        raise AudioError(name, "unreadable", f"cannot open: {exc.strerror or exc}") from None
    with fh:
        yield fh


@dataclass
class _Input:
    file: sf.SoundFile
    reader: _Reader
    wav: _WavData | None
    name: str


@contextmanager
def _open_input(source: str | Path | BinaryIO) -> Iterator[_Input]:
    """The input opened by libsndfile through a :class:`_Reader`."""
    name = _source_name(source)
    with _open_raw(source, name) as raw:
        reader = _Reader(raw)
        try:
            wav = _scan_wav(reader)
            f = sf.SoundFile(reader)
        except (RuntimeError, OSError) as exc:
            if (reader.real == 0) if reader.pipe else reader.peek_at(0, 1) == b"":
                raise AudioError(name, "empty_file", "no bytes to read") from None
            message = str(getattr(exc, "error_string", None) or exc).strip()
            raise AudioError(name, "not_audio", f"not a WAV/FLAC stream libsndfile can read: {message}") from None
        reader.end_header()
        with f:
            yield _Input(f, reader, wav, name)


def _read(inp: _Input, n: int) -> np.ndarray:
    """Up to ``n`` frames ``(k, channels)`` float32; ``k == 0`` at the end of the input."""
    f = inp.file
    buf = np.empty((n, f.channels), dtype=np.float32)
    # libsndfile's own call: soundfile's read() seeks after each block, which a stream of unknown
    # length refuses (see decode._read_to_end).
    k = int(sf._snd.sf_readf_float(f._file, sf._ffi.cast("float*", buf.ctypes.data), n))
    if f._errorcode:
        message = sf.LibsndfileError(f._errorcode).error_string
        raise AudioError(inp.name, "truncated", f"{f.format} stream fails while decoding: {message}")
    return buf[:max(k, 0)]


def _check_truncated(inp: _Input, frames_read: int) -> None:
    """The input ended before the length its header states."""
    f, reader = inp.file, inp.reader
    if inp.wav is not None:
        if not _wav_unknown_size(inp.wav.size):
            # libsndfile stops at the end of a file's data, and reads a pipe until it ends or the data does.
            have = reader.real if reader.pipe else reader.raw.seek(0, io.SEEK_END) - reader.base
            if (reader.eof or not reader.pipe) and have < inp.wav.offset + inp.wav.size:
                raise AudioError(inp.name, "truncated", f"WAV header declares {inp.wav.size} bytes of audio data "
                                                        f"but the input ends after {max(have - inp.wav.offset, 0)}")
        return
    stated = int(f.frames)
    # Read through a pipe, a length libsndfile derived from the pipe's far-away end states nothing.
    if 0 < stated < (1 << 40 if reader.pipe else _UNKNOWN_LENGTH) and frames_read < stated:
        raise AudioError(inp.name, "truncated", f"{f.format} header announces {stated} frames but only "
                                                f"{frames_read} could be decoded")


# ---------------------------------------------------------------------------------------------
# Windows


def _check_params(bundle: Bundle, window: float, hop: float) -> None:
    for name, value in (("window", window), ("hop", hop)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    if hop > window:
        raise ValueError(f"hop ({hop:g} s) must not be longer than window ({window:g} s): samples between "
                         "windows would never be predicted")
    dur = bundle.process_config.duration
    shortest = dur.min_seconds
    if dur.mode in ("fixed", "segment") and dur.short == "reject":
        shortest = max(shortest, dur.seconds)
    if window < shortest:
        raise ValueError(f"window ({window:g} s) is shorter than the {shortest:g} s below which the bundle rejects "
                         "a clip (process.duration): every window would be rejected")


def iter_timed_windows(bundle: Bundle, source: str | Path | BinaryIO, *, window: float, hop: float,
                       on_skip: Callable[[float, float, AudioError], None] | None = None,
                       block_frames: int = BLOCK_FRAMES) -> Iterator[tuple[WindowResult, float]]:
    """:func:`iter_windows`, each result with its latency: seconds from the moment the window's
    last sample was read to its result. The parameters are checked and the model is loaded here;
    the input is read as the iterator is consumed."""
    _check_params(bundle, window, hop)
    if isinstance(block_frames, bool) or not (isinstance(block_frames, int) and block_frames >= 1):
        raise ValueError(f"block_frames must be an integer >= 1, got {block_frames!r}")
    bundle.model  # noqa: B018 - load (and audit) the model before reading any input
    return _timed_windows(bundle, source, window=window, hop=hop, on_skip=on_skip, block_frames=block_frames)


def _timed_windows(bundle: Bundle, source: str | Path | BinaryIO, *, window: float, hop: float,
                   on_skip: Callable[[float, float, AudioError], None] | None,
                   block_frames: int) -> Iterator[tuple[WindowResult, float]]:
    mono = bundle.process_config.mono
    labels = bundle.labels
    with _open_input(source) as inp:
        sr, channels = int(inp.file.samplerate), int(inp.file.channels)
        float_file = str(inp.file.subtype) in ("FLOAT", "DOUBLE")
        win, step = round(window * sr), round(hop * sr)
        if win < 1 or step < 1:
            raise ValueError(f"window ({window:g} s) and hop ({hop:g} s) must each hold at least one sample at "
                             f"{sr} Hz")

        def result(y: np.ndarray, start: int, end: int) -> WindowResult | None:
            clip = y[np.newaxis] if y.ndim == 1 else np.ascontiguousarray(y.T)  # (channels, n), as load_audio
            try:
                probs = predict_samples(bundle, clip, sr=sr, source=inp.name)
            except AudioError as exc:
                if exc.reason not in ("silent", "too_short"):
                    raise
                if on_skip is not None:
                    on_skip(start / sr, end / sr, exc)
                return None
            k = int(np.argmax(probs))
            return WindowResult(start / sr, end / sr, labels[k], float(probs[k]), probs)

        # Warm the chain up on a window of generated noise while the input's first window arrives: the
        # first call of a Keras model compiles it (most of a second), which is no window's latency.
        noise = np.random.default_rng(0).uniform(-0.1, 0.1, (1 if mono else channels, win)).astype(np.float32)
        try:
            predict_samples(bundle, noise, sr=sr)
        except AudioError:
            pass

        # `pending` holds the samples from `pending_start` on: the next window and what was read of it.
        pending = np.empty((0,) if mono else (0, channels), dtype=np.float32)
        pending_start = next_start = total = 0
        last_start = None
        while True:
            block = _read(inp, min(block_frames, max(next_start + win - total, 1)))
            read_at = time.perf_counter()
            if not len(block):
                break
            if float_file and not np.isfinite(block).all():
                raise AudioError(inp.name, "nonfinite", f"NaN or infinite sample(s) after {total / sr:.3f} s in a "
                                                        f"{inp.file.subtype} {inp.file.format} input")
            if mono:
                block = downmix_frames(block) if channels > 1 else block[:, 0]
            pending = np.concatenate([pending, block])
            total += len(block)
            while next_start + win <= total:
                i = next_start - pending_start
                res = result(pending[i: i + win], next_start, next_start + win)
                if res is not None:
                    yield res, time.perf_counter() - read_at
                last_start = next_start
                next_start += step
            pending = pending[next_start - pending_start:]
            pending_start = next_start
        _check_truncated(inp, total)
        if total == 0:
            raise AudioError(inp.name, "empty_file", f"valid {inp.file.format} header but no audio frames")
        if last_start is None:
            raise AudioError(inp.name, "too_short", f"{total / sr:.3f} s of audio is shorter than one window "
                                                    f"({window:g} s)")
        if last_start + win < total:  # the final partial window, as dsp.segment's padded tail
            res = result(pending[: total - next_start], next_start, total)
            if res is not None:
                yield res, time.perf_counter() - read_at


def iter_windows(bundle: Bundle, source: str | Path | BinaryIO, *, window: float, hop: float,
                 on_skip: Callable[[float, float, AudioError], None] | None = None) -> Iterator[WindowResult]:
    """Predict every window of ``window`` seconds every ``hop`` seconds of a WAV/FLAC input.

    Parameters
    ----------
    bundle : Bundle
    source : path, or binary file object
        A file, or a stream libsndfile can read (WAV, FLAC...): ``sys.stdin.buffer``, a pipe, the
        ``BytesIO`` of an upload; read from its current position, block by block
        (:data:`BLOCK_FRAMES` frames at most), so memory does not grow with its length.
    window, hop : float
        Seconds; ``0 < hop <= window``.
    on_skip : callable, optional
        Called with ``(start, end, error)`` for a window the chain rejects (silent, or too short
        after trimming), which gets no result.

    Returns
    -------
    iterator of WindowResult
        In order, each as soon as the window's last sample has been read; the final partial window
        as the module docstring says. A window's ``probs`` are exactly those of
        :func:`~soundstage.predict.predict_file` on a file holding the same samples (the same
        decoded values: a cut of a 16-bit input written as 16-bit, say).

    Raises
    ------
    ValueError
        A window or hop that is not > 0, a hop longer than the window, a window shorter than what
        the bundle rejects (``process.duration``): when called, before anything is read; a model
        file that does not load (see :attr:`~soundstage.bundle.Bundle.model`), likewise.
    AudioError
        Naming the source: ``not_found``, ``unreadable``, ``empty_file``, ``not_audio``, ``truncated``
        (the input ends before its header's length, or fails to decode), ``nonfinite``, ``too_short``
        (shorter than one window), ``cannot_process``. Raised where the problem is met: the
        windows before it have been yielded.
    """
    timed = iter_timed_windows(bundle, source, window=window, hop=hop, on_skip=on_skip)
    return (res for res, _ in timed)


def aggregate(results: Sequence[WindowResult], labels: Sequence[str]) -> np.ndarray:
    """Clip-level class probabilities ``[shape=(n_labels,)]``: the mean of the windows' ``probs``.

    Raises ``ValueError`` without windows, or when a window has not ``len(labels)`` probabilities.
    """
    if not results:
        raise ValueError("no window to aggregate")
    probs = np.stack([np.asarray(r.probs, dtype=np.float64) for r in results])
    if probs.shape[1] != len(labels):
        raise ValueError(f"windows carry {probs.shape[1]} probabilities but there are {len(labels)} labels")
    return probs.mean(axis=0)


def iter_events(results: Iterable[WindowResult], *, min_confidence: float = 0.0) -> Iterator[Event]:
    """:func:`merge_events`, each event yielded as soon as the window after it arrives."""
    if isinstance(min_confidence, bool) or not (0.0 <= min_confidence <= 1.0):
        raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence!r}")
    run: list[WindowResult] = []
    for r in results:
        joins = run and r.label == run[-1].label and r.start <= run[-1].end + 1e-9
        if run and not (joins and r.score >= min_confidence):
            yield Event(run[0].start, run[-1].end, run[0].label, float(np.mean([w.score for w in run])))
            run = []
        if r.score >= min_confidence:
            run.append(r)
    if run:
        yield Event(run[0].start, run[-1].end, run[0].label, float(np.mean([w.score for w in run])))


def merge_events(results: Iterable[WindowResult], *, min_confidence: float = 0.0) -> list[Event]:
    """Merge consecutive windows with the same label into events.

    A window joins the event before it when it has the same label, a ``score >= min_confidence``
    and starts before (or where) the event ends; windows below ``min_confidence`` belong to no
    event and end the one before them. An event spans from its first window's start to its last
    window's end (overlapping windows make neighbouring events overlap by up to ``window - hop``),
    and its score is the mean score of its windows.
    """
    return list(iter_events(results, min_confidence=min_confidence))


# ---------------------------------------------------------------------------------------------
# Command line: rows as the windows come


#: ``soundstage predict --window --format``: ``table`` (aligned text), ``csv`` (``file, start, end, label,
#: score, kind`` with kind ``window``/``event``/``clip``), ``json`` (JSON Lines, one object per row),
#: ``audacity`` (an Audacity label track: ``start<TAB>end<TAB>label``).
FORMATS = ("table", "csv", "json", "audacity")


class _RowWriter:
    """Writes each row as it comes (flushed), in one of :data:`FORMATS`."""

    def __init__(self, out: TextIO, err: TextIO, *, fmt: str, labels: Sequence[str], timing: bool) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.out, self.err, self.fmt, self.labels, self.timing = out, err, fmt, list(labels), timing
        self.width = max(len(label) for label in self.labels)
        self._header: str | None = None  # the table's column names, printed before a file's first row
        if fmt == "csv":
            self._csv = csv.writer(out, lineterminator="\n")
            self._csv.writerow(["file", "start", "end", "label", "score", "kind", *(["latency_ms"] if timing else [])])
            out.flush()

    def header(self, name: str) -> None:
        cols = f"{'file':<{len(name)}}  {'start':>10}  {'end':>10}  {'label':<{self.width}}  {'score':>6}"
        self._header = cols + ("  latency_ms" if self.timing else "") if self.fmt == "table" else None

    def row(self, name: str, kind: str, start: float, end: float, label: str, score: float, *,
            probs: np.ndarray | None = None, latency: float | None = None, note: str = "") -> None:
        ms = None if latency is None else latency * 1e3
        if self._header is not None:
            print(self._header, file=self.out)
            self._header = None
        if self.fmt == "table":
            text = f"{name}  {start:10.3f}  {end:10.3f}  {label:<{self.width}}  {score:6.3f}"
            if self.timing and ms is not None:
                text += f"  {ms:10.2f}"
            print(text + (f"  {note}" if note else ""), file=self.out, flush=True)
        elif self.fmt == "csv":
            latency_cell = ([] if not self.timing else [f"{ms:.3f}" if ms is not None else ""])
            self._csv.writerow([name, f"{start:.6f}", f"{end:.6f}", label, f"{score:.6f}", kind, *latency_cell])
            self.out.flush()
        elif self.fmt == "json":
            record: dict[str, Any] = {"file": name, "kind": kind, "start": round(start, 6), "end": round(end, 6),
                                      "label": label, "score": score}
            if probs is not None:
                record["probs"] = {lab: float(p) for lab, p in zip(self.labels, probs, strict=True)}
            if self.timing and ms is not None:
                record["latency_ms"] = round(ms, 3)
            print(json.dumps(record), file=self.out, flush=True)
        elif kind == "clip":  # audacity: a label track has no room for the whole-input row
            print(f"predict: {name}: {label} {score:.3f} ({note})", file=self.err, flush=True)
        else:
            print(f"{start:.6f}\t{end:.6f}\t{label}", file=self.out, flush=True)

    def error(self, name: str, exc: AudioError) -> None:
        if self.fmt == "json":
            print(json.dumps({"file": name, "kind": "error", "reason": exc.reason, "message": str(exc)}),
                  file=self.out, flush=True)
        print(f"predict: error: {exc}", file=self.err, flush=True)


def predict_windows(*, bundle: Bundle, files: Sequence[str], window: float, hop: float, fmt: str = "table",
                    events: bool = False, min_confidence: float = 0.0, timing: bool = False,
                    stdin: BinaryIO | None = None, out: TextIO, err: TextIO) -> int:
    """``soundstage predict --window``: write each window's row (or each event) of every file to ``out``
    as soon as it is known, then the file's clip-level row (the mean of its windows' probabilities).

    ``-`` in ``files`` reads ``stdin``. A file that cannot be read gets an error on ``err`` (and a JSON
    ``error`` row) and the others go on; skipped windows are counted on ``err``; with ``timing``, each
    window row gets its latency (ms, from its last sample read to its result) and ``err`` gets the
    p50/p99 of each file. Returns the number of files that gave at least one window.

    Raises ``ValueError`` for the parameters (see :func:`iter_windows`), before any file is read.
    """
    _check_params(bundle, window, hop)
    if isinstance(min_confidence, bool) or not (0.0 <= min_confidence <= 1.0):
        raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence!r}")
    if files.count("-") > 1:
        raise ValueError("standard input ('-') can be read only once")
    writer = _RowWriter(out, err, fmt=fmt, labels=bundle.labels, timing=timing)
    predicted = 0
    for name in files:
        # A running sum for the clip-level row (aggregate's mean) and the latencies as doubles: a live
        # stream may go on for days.
        seen = {"n": 0, "sum": np.zeros(len(bundle.labels)), "start": 0.0, "end": 0.0}
        latencies = array.array("d")
        skipped: dict[str, int] = {}

        def skip(start: float, end: float, exc: AudioError, skipped: dict[str, int] = skipped) -> None:
            skipped[exc.reason] = skipped.get(exc.reason, 0) + 1

        def timed(pairs: Iterator[tuple[WindowResult, float]], seen: dict[str, Any] = seen,
                  latencies: array.array = latencies) -> Iterator[WindowResult]:
            for res, latency in pairs:
                if not seen["n"]:
                    seen["start"] = res.start
                seen["n"] += 1
                seen["sum"] += res.probs
                seen["end"] = res.end
                latencies.append(latency)
                yield res

        source: str | BinaryIO = name
        if name == "-":
            if stdin is None:
                raise ValueError("no standard input to read '-' from")
            source = stdin
        windows = timed(iter_timed_windows(bundle, source, window=window, hop=hop, on_skip=skip))
        writer.header(name)
        try:
            if events:
                for ev in iter_events(windows, min_confidence=min_confidence):
                    writer.row(name, "event", ev.start, ev.end, ev.label, ev.score)
            else:
                for res in windows:
                    writer.row(name, "window", res.start, res.end, res.label, res.score, probs=res.probs,
                               latency=latencies[-1])
            failure = None
        except AudioError as exc:
            failure = exc
        if seen["n"]:
            probs = seen["sum"] / seen["n"]
            k = int(np.argmax(probs))
            writer.row(name, "clip", seen["start"], seen["end"], bundle.labels[k], float(probs[k]),
                       probs=probs, note=f"clip: mean of {seen['n']} windows")
            predicted += 1
        if skipped:
            counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
            print(f"predict: {name}: {sum(skipped.values())} window(s) skipped ({counts})", file=err, flush=True)
        if timing and latencies:
            p50, p99 = np.percentile(np.asarray(latencies) * 1e3, [50, 99])
            print(f"timing: {name}: {len(latencies)} windows, latency p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                  "(from a window's last sample read to its result)", file=err, flush=True)
        if failure is not None:
            writer.error(name, failure)
    return predicted
