"""``soundstage serve BUNDLE``: predictions for uploaded audio files over HTTP (FastAPI + uvicorn).

:func:`create_app` builds the application around one model bundle, loaded, audited and warmed up once
before anything is served; :func:`serve` runs it with uvicorn, on 127.0.0.1 unless told otherwise.
Every prediction is the chain of ``soundstage predict`` (:func:`soundstage.predict.predict_file`) on
the uploaded file, so the service and the CLI give the same probabilities.

Endpoints:

- ``POST /predict``, a ``multipart/form-data`` body whose field ``file`` holds a WAV, FLAC, Ogg, MP3
  (or AIFF/AU) file (``curl -F file=@clip.wav http://127.0.0.1:8000/predict``): ``{"file", "label",
  "probabilities": {label: p}, "duration"}`` (seconds), and for audio longer than
  ``window_seconds`` also ``"windows": [{"start", "end", "label", "score"}]``
  (:func:`soundstage.stream.iter_windows`).
- ``GET /health``: model, kind, number of labels, uptime, requests in progress, limits.
- ``GET /labels``: the bundle's labels, in the order of its probabilities.

What is accepted is bounded (:class:`ServeLimits`, ``params.yaml: serve``):

- An upload larger than ``max_upload_bytes`` is refused (413 ``too_large``) from its
  ``Content-Length`` before any byte is read, or, sent without one, as soon as the bytes received pass
  the limit; nothing of it is held in memory (the file's bytes go to a temporary file as they arrive,
  deleted after every request, whatever happens).
- Audio longer than ``max_seconds`` is refused (413 ``too_long``) from its header where the format
  states the length (WAV, AIFF, AU, FLAC with a total, Ogg, MP3), else by counting decoded frames
  block by block (a FLAC stream without a total), before the whole file is decoded.
- ``concurrency`` predictions run at once; up to ``queue`` more requests may be uploading or wait for
  a slot, in arrival order. Beyond ``concurrency + queue`` requests in progress, a request is refused
  at once with 503 ``busy`` and a ``Retry-After`` header (seconds), before its body is read.
- A request not answered ``timeout_seconds`` after it arrived gets 504 ``timeout``. A prediction
  already running cannot be stopped: it finishes in its thread and keeps its slot until then, so
  timed-out work never piles up beyond the limits.

Bad input gets a 4xx JSON body ``{"error": code, "detail": message}``, the message naming the
upload's file name: 400 ``missing_file`` (no multipart body, no field ``file``, a field without a
file), 400 ``bad_form`` (a malformed multipart body), 413 ``too_large`` / ``too_long``, 415
``not_audio`` / ``unsupported_format`` (content that is no audio, or a format not served), 422 for a
served format that cannot be used (``empty_file``, ``truncated``, ``nonfinite``, ``silent``,
``too_short``, ``cannot_process``, as in ``soundstage predict``). The service goes on serving.
"""

from __future__ import annotations

import asyncio
import http
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from soundstage.bundle import Bundle, load_bundle
from soundstage.decode import AudioError, probe_audio
from soundstage.predict import predict_file

__all__ = ["SERVED_FORMATS", "RequestError", "ServeLimits", "create_app", "serve"]

log = logging.getLogger("uvicorn.error")  # uvicorn's configured logger: messages land beside its own

#: libsndfile major formats served: WAV (and its RF64/WAVEX variants), FLAC, Ogg, MP3, and the AIFF and
#: AU files ``soundstage predict`` reads too. Anything else is refused before it reaches a decoder.
SERVED_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "FLAC", "OGG", "MP3", "AIFF", "AU"})
#: File-name extensions kept on the temporary copy of an upload (decoders read the content, not the name).
_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".snd"})
#: Bytes a multipart body may carry beside the file's own: boundaries, part headers, small fields.
FORM_OVERHEAD = 64 << 10
#: After refusing an oversized body sent without a length, up to this many more bytes are read and
#: dropped, so that a client that sends its whole body before reading (most do) still gets the 413;
#: beyond that the connection is closed.
DRAIN_BYTES = 64 << 20
#: libsndfile's frame count when a header states no length (SF_COUNT_MAX).
_UNKNOWN_LENGTH = 2**63 - 1
#: Frames decoded per block when a length has to be counted.
_COUNT_BLOCK = 1 << 12


@dataclass(frozen=True)
class ServeLimits:
    """What the service accepts and how much it does at once (``params.yaml: serve``).

    Attributes
    ----------
    max_upload_bytes : int
        Largest uploaded file, in bytes (``serve.max_upload_mb`` MiB).
    max_seconds : float
        Longest audio accepted, in seconds.
    timeout_seconds : float
        From a request's arrival to its answer, in seconds.
    concurrency : int
        Predictions computed at once (threads).
    queue : int
        Requests that may be in progress beside the running ones (uploading, or waiting for a slot).
    window_seconds, hop_seconds : float
        Audio longer than ``window_seconds`` also gets labels of windows of that length, ``hop_seconds``
        apart (``hop_seconds <= window_seconds``).
    """

    max_upload_bytes: int
    max_seconds: float
    timeout_seconds: float
    concurrency: int
    queue: int
    window_seconds: float
    hop_seconds: float

    def __post_init__(self) -> None:
        positive = {"max_upload_mb": self.max_upload_bytes, "max_seconds": self.max_seconds,
                    "timeout_seconds": self.timeout_seconds, "window_seconds": self.window_seconds,
                    "hop_seconds": self.hop_seconds}
        for key, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"serve.{key}: must be a positive number, got {value!r}")
        if not (isinstance(self.concurrency, int) and self.concurrency >= 1):
            raise ValueError(f"serve.concurrency: must be an integer >= 1, got {self.concurrency!r}")
        if not (isinstance(self.queue, int) and self.queue >= 0):
            raise ValueError(f"serve.queue: must be an integer >= 0, got {self.queue!r}")
        if self.hop_seconds > self.window_seconds:
            raise ValueError(f"serve.hop_seconds: {self.hop_seconds:g} s must not exceed serve.window_seconds "
                             f"({self.window_seconds:g} s)")

    @classmethod
    def from_params(cls, serve: Mapping[str, Any]) -> ServeLimits:
        """From a ``serve`` mapping in the ``params.yaml`` layout (``max_upload_mb`` in MiB)."""
        return cls(max_upload_bytes=int(serve["max_upload_mb"] * (1 << 20)), max_seconds=float(serve["max_seconds"]),
                   timeout_seconds=float(serve["timeout_seconds"]), concurrency=int(serve["concurrency"]),
                   queue=int(serve["queue"]), window_seconds=float(serve["window_seconds"]),
                   hop_seconds=float(serve["hop_seconds"]))

    def to_dict(self) -> dict[str, Any]:
        """The limits in the ``params.yaml`` layout, as ``/health`` shows them."""
        return {"max_upload_mb": self.max_upload_bytes / (1 << 20), "max_seconds": self.max_seconds,
                "timeout_seconds": self.timeout_seconds, "concurrency": self.concurrency, "queue": self.queue,
                "window_seconds": self.window_seconds, "hop_seconds": self.hop_seconds}


class RequestError(Exception):
    """A request refused: HTTP ``status``, a stable ``code`` and a ``detail`` naming the upload.

    ``close``: answer with ``Connection: close`` (a body left unread that is not worth draining).
    """

    def __init__(self, status: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None,
                 close: bool = False) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = {**(headers or {}), **({"Connection": "close"} if close else {})}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "detail": self.detail}, status_code=self.status,
                            headers=self.headers or None)


#: HTTP status of each :class:`~soundstage.decode.AudioError` reason: content that is not (served)
#: audio is 415, a served format that cannot be used 422; the temporary copy unreadable is our fault.
_AUDIO_STATUS = {"not_audio": 415, "undecodable": 415, "empty_file": 422, "truncated": 422, "nonfinite": 422,
                 "silent": 422, "too_short": 422, "cannot_process": 422, "not_found": 500, "unreadable": 500}


def _audio_error(exc: AudioError, name: str) -> RequestError:
    """``exc`` (about the temporary copy) as the answer about the upload ``name``."""
    return RequestError(_AUDIO_STATUS.get(exc.reason, 422), exc.reason, str(exc.with_path(name)))


def display_name(raw: bytes | str | None) -> str:
    """The client's file name made safe to echo: its last path component, printable characters only,
    at most 200 characters; ``"upload"`` when nothing is left."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip()[:200]
    return text or "upload"


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / (1 << 20):g} MiB"


# ---------------------------------------------------------------------------------------------
# Receiving an upload


class _FormFile:
    """Callbacks of python-multipart's streaming parser: the first part named ``file`` that has a file
    name is written to a temporary file in ``directory`` as it arrives, at most ``max_bytes`` of it;
    every other part is dropped. ``path`` is ``None`` until that part starts, and after :meth:`discard`.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        self.path: Path | None = None
        self.name = "upload"
        self.size = 0
        self.too_large = False
        self.text_field = False  # a field named 'file' without a file name: text, not a file
        self.fields: list[str] = []
        self.complete = False  # the closing boundary was seen
        self._fh: Any = None
        self._writing = False
        self._header = [b"", b""]
        self._disposition = b""
        self.callbacks: Any = {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition, self._writing = b"", False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def _header_end(self) -> None:
        if self._header[0].strip().lower() == b"content-disposition":
            self._disposition = self._header[1]
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        field = options.get(b"name", b"").decode("utf-8", "replace")
        self.fields.append(field)
        if field != "file" or self.path is not None:
            return
        if b"filename" not in options:
            self.text_field = True
            return
        self.name = display_name(options[b"filename"])
        suffix = Path(self.name).suffix.lower()
        fd, path = tempfile.mkstemp(prefix="upload-", suffix=suffix if suffix in _SUFFIXES else "",
                                    dir=self.directory)
        self.path, self._fh, self._writing = Path(path), open(fd, "wb"), True  # noqa: SIM115 - closed in close()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._writing:
            return
        if self.size + (end - start) > self.max_bytes:
            self.too_large, self._writing = True, False
            self.close()
            return
        # Page-cache writes of the chunks the server hands over (~64 KiB): too short to need a thread.
        self._fh.write(data[start:end])
        self.size += end - start

    def _part_end(self) -> None:
        if self._writing:
            self._writing = False
            self.close()

    def _end(self) -> None:
        self.complete = True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        """Close and delete the temporary file (safe to call more than once, from any thread)."""
        self.close()
        path, self.path = self.path, None
        if path is not None:
            path.unlink(missing_ok=True)


async def _receive_upload(request: Request, form: _FormFile) -> None:
    """Stream the multipart body of ``request`` into ``form``, refusing it past ``form.max_bytes``.

    Raises
    ------
    RequestError
        400 ``missing_file`` / ``bad_form``, 413 ``too_large``.
    """
    max_bytes = form.max_bytes
    content_type = request.headers.get("content-type", "")
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise RequestError(400, "missing_file", "expected a multipart/form-data body with the audio file in the field "
                                                f"'file' (curl -F file=@clip.wav URL), got Content-Type "
                                                f"{content_type[:100]!r}")
    limit = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        # Refused before reading a byte: the server drops what the client still sends (up to its
        # Content-Length), or, for an absurd length, closes the connection.
        raise RequestError(413, "too_large", f"the upload ({int(declared)} bytes) is larger than the "
                                             f"{_mib(max_bytes)} limit (serve.max_upload_mb)",
                           close=int(declared) > limit + DRAIN_BYTES)
    parser = MultipartParser(options[b"boundary"], form.callbacks)
    chunks = request.stream().__aiter__()
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                form.too_large = True
            if form.too_large:
                break
            parser.write(chunk)
        else:
            parser.finalize()
            if not form.too_large and not form.complete:
                raise RequestError(400, "bad_form", f"'{form.name}': the multipart body ends before its closing "
                                                    "boundary")
        if form.too_large:
            form.discard()
            drained = 0
            async for chunk in chunks:  # the rest of the body, dropped as it comes
                drained += len(chunk)
                if drained > DRAIN_BYTES:
                    break
            raise RequestError(413, "too_large", f"'{form.name}' is larger than the {_mib(max_bytes)} limit "
                                                 "(serve.max_upload_mb)", close=drained > DRAIN_BYTES)
    except FormParserError as exc:
        raise RequestError(400, "bad_form", f"'{form.name}': the multipart body is malformed ({exc})") from None
    except ClientDisconnect:
        raise RequestError(400, "disconnected", f"'{form.name}': the client went away during the upload") from None
    finally:
        form.close()
    if form.path is None:
        if form.text_field:
            raise RequestError(400, "missing_file", "the field 'file' holds text, not a file: send the audio as a "
                                                    "file (curl -F file=@clip.wav URL)")
        fields = ", ".join(repr(f) for f in form.fields[:10]) or "none"
        raise RequestError(400, "missing_file", f"no file in the field 'file' (fields received: {fields}); send "
                                                "the audio as curl -F file=@clip.wav URL")


# ---------------------------------------------------------------------------------------------
# Checking and predicting an upload (in a worker thread)


def _count_frames(path: Path, limit: int) -> int | None:
    """Frames of a file whose header states no length (a FLAC stream without a total), decoded block
    by block into one small buffer; ``None`` as soon as they pass ``limit``. A decoding error stops the
    count: the prediction's own decode then names it."""
    with sf.SoundFile(path) as f:
        buf = np.empty((_COUNT_BLOCK, f.channels), dtype=np.float32)
        ptr = sf._ffi.cast("float*", buf.ctypes.data)
        # soundfile's read() seeks after each block, which libsndfile refuses for an unknown length:
        # read through libsndfile's own call, as soundstage.decode does for the same files.
        total = 0
        while True:
            n = int(sf._snd.sf_readf_float(f._file, ptr, _COUNT_BLOCK))
            if n <= 0 or f._errorcode:
                return total
            total += n
            if total > limit:
                return None


def check_audio(path: str | Path, *, name: str, max_seconds: float) -> float:
    """Duration in seconds of the uploaded file at ``path`` (``name`` in messages), refusing what is not
    served audio or is longer than ``max_seconds`` before it is decoded whole.

    Raises
    ------
    RequestError
        422 ``empty_file``; 415 ``not_audio`` (libsndfile cannot open it) or ``unsupported_format``
        (not in :data:`SERVED_FORMATS`); 413 ``too_long``.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise RequestError(422, "empty_file", f"'{name}': the upload is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        message = str(getattr(exc, "error_string", None) or exc).strip()
        raise RequestError(415, "not_audio", f"'{name}': not a WAV, FLAC, Ogg, MP3, AIFF or AU file "
                                             f"(libsndfile: {message})") from None
    if info.format not in SERVED_FORMATS:
        raise RequestError(415, "unsupported_format", f"'{name}': {info.format} audio is not served (WAV, FLAC, "
                                                      "Ogg, MP3, AIFF, AU)")
    rate = int(info.samplerate)
    limit = math.floor(max_seconds * rate)
    if info.frames >= _UNKNOWN_LENGTH:
        frames = _count_frames(path, limit)
    elif info.format == "MP3":  # libsndfile only estimates an MP3's length: count its frames
        try:
            frames = probe_audio(path).frames
        except AudioError as exc:
            raise _audio_error(exc, name) from None
    else:
        frames = int(info.frames)
    if frames is None or frames > limit:
        stated = f"{frames / rate:.1f} s of audio" if frames is not None else "more audio than that"
        raise RequestError(413, "too_long", f"'{name}': {stated}, longer than the {max_seconds:g} s limit "
                                            "(serve.max_seconds)")
    if frames == 0:
        raise RequestError(422, "empty_file", f"'{name}': a {info.format} header but no audio frames")
    return frames / rate


def predict_upload(bundle: Bundle, path: str | Path, *, name: str, limits: ServeLimits) -> dict[str, Any]:
    """The answer of ``POST /predict`` for the uploaded file at ``path`` (``name``: the client's file name).

    Returns
    -------
    dict
        ``file``, ``label``, ``probabilities`` (label → p, the bundle's order; those of
        :func:`soundstage.predict.predict_file`), ``duration`` (seconds); for audio longer than
        ``limits.window_seconds`` also ``windows``: ``[{start, end, label, score}]`` (seconds; the
        window's label and its probability).

    Raises
    ------
    RequestError
        See :func:`check_audio`; 415/422 for a file the chain cannot use (its ``AudioError`` reason).
    """
    duration = check_audio(path, name=name, max_seconds=limits.max_seconds)
    try:
        probs = predict_file(bundle, path)
    except AudioError as exc:
        raise _audio_error(exc, name) from None
    labels = bundle.labels
    result: dict[str, Any] = {
        "file": name, "label": labels[int(np.argmax(probs))],
        "probabilities": {lab: float(p) for lab, p in zip(labels, probs, strict=True)}, "duration": duration}
    if duration > limits.window_seconds:
        from soundstage.stream import iter_windows

        try:
            result["windows"] = [
                {"start": float(w.start), "end": float(w.end), "label": w.label, "score": float(w.score)}
                for w in iter_windows(bundle, path, window=limits.window_seconds, hop=limits.hop_seconds)]
        except AudioError as exc:
            raise _audio_error(exc, name) from None
    return result


# ---------------------------------------------------------------------------------------------
# The application


class _Admission:
    """Requests in progress, at most ``capacity``; released from worker threads too (a timed-out
    prediction leaves when its thread is done). Keeps a running mean of prediction times for
    ``Retry-After``."""

    def __init__(self, capacity: int, concurrency: int) -> None:
        self.capacity, self.concurrency = capacity, concurrency
        self.count = 0
        self.mean_seconds = 1.0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.count >= self.capacity:
                return False
            self.count += 1
            return True

    def leave(self, seconds: float | None = None) -> None:
        with self._lock:
            self.count -= 1
            if seconds is not None:
                self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times a prediction's mean, per slot."""
        with self._lock:
            return max(1, math.ceil(self.mean_seconds * max(self.count - self.concurrency + 1, 1) / self.concurrency))


def _serialize_model_calls(bundle: Bundle) -> None:
    """One model call at a time: Keras' ``predict`` is not thread-safe (it writes the model's state
    back after each call). Decoding and features, most of the work, still run in parallel."""
    lock = threading.Lock()
    model_predict = bundle.predict

    def predict(**kwargs: Any) -> np.ndarray:
        with lock:
            return model_predict(**kwargs)

    bundle.predict = predict  # type: ignore[method-assign]  # this bundle belongs to the service now


def _warm_up(bundle: Bundle, limits: ServeLimits) -> None:
    """Predict generated noise once, whole and by windows: the model's first call and librosa's JIT
    compile here, not in the first request, and a chain that fails on it (a model not matching its
    features, windows shorter than the bundle accepts) stops the start.

    Raises
    ------
    ValueError
        Naming ``serve.window_seconds`` for windows the bundle would reject; the bundle's own errors.
    """
    from soundstage.stream import iter_windows

    pconf = bundle.process_config
    rate = pconf.sample_rate or 48000
    seconds = max(2.0, pconf.duration.seconds, pconf.duration.min_seconds + 1.0,
                  limits.window_seconds + limits.hop_seconds)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)
    fd, path = tempfile.mkstemp(prefix="soundstage-warmup-", suffix=".wav")
    os.close(fd)
    try:
        sf.write(path, noise, rate, subtype="FLOAT")
        predict_file(bundle, path)
        try:
            for _ in iter_windows(bundle, path, window=limits.window_seconds, hop=limits.hop_seconds):
                pass
        except ValueError as exc:
            raise ValueError(f"serve.window_seconds / serve.hop_seconds: {exc}") from None
    except AudioError as exc:  # the chain refuses noise (a filter, a minimum length): not a broken bundle
        log.warning("soundstage serve: warm-up prediction refused (%s); the first request compiles instead", exc)
    finally:
        os.unlink(path)


def create_app(bundle_ref: str | Path | Bundle, *, limits: ServeLimits) -> FastAPI:
    """The HTTP application around one model bundle (see the module for the endpoints and limits).

    The bundle is loaded, its model audited (:func:`soundstage.bundle.load_bundle`) and warmed up here,
    so a refused bundle raises before anything is served. A :class:`~soundstage.bundle.Bundle` given
    is used as is (its ``predict`` is wrapped to run one model call at a time). Uploads go to a
    temporary folder made when the application starts and removed when it stops.

    Raises
    ------
    FileNotFoundError, ValueError
        For the bundle (:func:`~soundstage.bundle.load_bundle`, :class:`~soundstage.models.UnsafeModelError`).
    """
    bundle = bundle_ref if isinstance(bundle_ref, Bundle) else load_bundle(bundle_ref)
    bundle.model  # noqa: B018 - load and audit the model file now, not on the first request
    _serialize_model_calls(bundle)
    _warm_up(bundle, limits)
    admission = _Admission(limits.concurrency + limits.queue, limits.concurrency)
    started = time.monotonic()
    runtime: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        runtime["dir"] = app.state.upload_dir = Path(tempfile.mkdtemp(prefix="soundstage-serve-"))
        runtime["pool"] = ThreadPoolExecutor(limits.concurrency, thread_name_prefix="soundstage-predict")
        try:
            yield
        finally:
            runtime["pool"].shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(runtime["dir"], ignore_errors=True)

    app = FastAPI(title="soundstage", summary=f"predictions of the model {bundle.meta['model']} ({bundle.kind})",
                  lifespan=lifespan)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = http.HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return JSONResponse({"error": code, "detail": f"{request.method} {request.url.path}: {exc.detail}"},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": bundle.meta["model"], "kind": bundle.kind, "labels": len(bundle.labels),
                "uptime_seconds": round(time.monotonic() - started, 3), "in_progress": admission.count,
                "limits": limits.to_dict()}

    @app.get("/labels")
    async def labels() -> dict[str, Any]:
        return {"labels": bundle.labels}

    form_schema = {"type": "object", "required": ["file"],
                   "properties": {"file": {"type": "string", "format": "binary",
                                           "description": "a WAV, FLAC, Ogg, MP3, AIFF or AU file"}}}

    @app.post("/predict", openapi_extra={"requestBody": {"required": True,
                                                         "content": {"multipart/form-data": {"schema": form_schema}}}})
    async def predict(request: Request) -> JSONResponse:
        if not admission.enter():
            return RequestError(503, "busy", f"{admission.capacity} requests in progress (serve.concurrency "
                                             f"{limits.concurrency} + serve.queue {limits.queue}): retry later",
                                headers={"Retry-After": str(admission.retry_after())}).response()
        form = _FormFile(runtime["dir"], limits.max_upload_bytes)
        handed_over = False  # once the job is submitted, its end releases the slot and the file
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limits.timeout_seconds
            try:
                await asyncio.wait_for(_receive_upload(request, form), limits.timeout_seconds)
            except TimeoutError:
                raise RequestError(504, "timeout", f"'{form.name}': the upload was not received within "
                                                   f"{limits.timeout_seconds:g} s (serve.timeout_seconds)",
                                   close=True) from None
            path, name = form.path, form.name
            took: list[float] = []

            def work() -> dict[str, Any]:
                t0 = time.monotonic()
                try:
                    return predict_upload(bundle, path, name=name, limits=limits)
                finally:
                    took.append(time.monotonic() - t0)

            job: Future[dict[str, Any]] = runtime["pool"].submit(work)

            def finished(done: Future[dict[str, Any]]) -> None:
                form.discard()
                admission.leave(took[0] if took else None)

            job.add_done_callback(finished)
            handed_over = True
            try:
                # On timeout the job is cancelled if it has not started; a running one finishes on its own.
                return JSONResponse(await asyncio.wait_for(asyncio.wrap_future(job), max(deadline - loop.time(), 0)))
            except TimeoutError:
                raise RequestError(504, "timeout", f"'{name}': no answer within {limits.timeout_seconds:g} s "
                                                   "(serve.timeout_seconds)") from None
        except RequestError as exc:
            return exc.response()
        except Exception as exc:  # noqa: BLE001 - a bug or an unexpected file must not stop the service
            log.exception("soundstage serve: %s failed", form.name)
            return RequestError(500, "internal", f"'{form.name}': {type(exc).__name__}: {exc}").response()
        finally:
            if not handed_over:
                form.discard()
                admission.leave()

    return app


def serve(bundle_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits,
          log_level: str = "info") -> None:
    """Load the bundle (:func:`create_app`), then serve it with uvicorn on ``host:port`` until stopped
    (Ctrl-C or SIGTERM: the requests in progress are finished first).

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing or refused bundle, before anything is bound.
    """
    import uvicorn

    app = create_app(bundle_dir, limits=limits)
    where = f"http://{host}:{port}" if port else f"http://{host}:<port>"  # port 0: uvicorn prints the one it got
    print(f"serve: {bundle_dir} loaded; POST a file to {where}/predict (curl -F file=@clip.wav {where}/predict)",
          file=sys.stderr, flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"serve: WARNING: bound to {host}: reachable from other machines, with no authentication",
              file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=int(limits.timeout_seconds)
                + 1)
