"""The FastAPI application of ``gen serve``. One model per process; transcription requests go through the
:class:`~generalist_cli.serve.batcher.Batcher`, other conversions take the same model lock one at a time.

Errors follow OpenAI's shape, ``{"error": {"message", "type", "code"}}``: 400 for bad input (undecodable or
too long audio, unknown language, a conversion the model was not trained for), 413 for an upload over the
size limit, 503 with ``Retry-After`` when the queue is full. Uploads are decoded in memory; the only files
written (a video to decode, speech to encode) live in a temporary folder removed before the response.
"""

import asyncio
import contextlib
import io
import json
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
AUDIO_FORMATS = {"wav": "audio/wav", "m4a": "audio/mp4", "flac": "audio/flac", "mp3": "audio/mpeg"}


@dataclass(frozen=True)
class ServeConfig:
    model: str = "whisper-base"
    device: str = "cpu"
    max_batch: int = 8  # requests transcribed together
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for company
    queue_size: int = 64  # waiting requests before 503
    max_mb: float = 25.0  # upload limit (OpenAI's is 25 MB)
    max_seconds: float = 1800.0  # audio length limit
    threads: int = 0  # torch's or ONNX Runtime's threads (0: their default)
    pack: bool | None = None  # utterances packed into encoder rows; None: when the model was trained that way


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", headers=None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


class Service:
    """What the endpoints do, on one model: upload limits, audio decoding, language checks, speech -> text
    through the micro-batcher, every other conversion through gen run's conversion service
    (infer/convert.py), one at a time under the model lock."""

    def __init__(self, config: ServeConfig, loaded) -> None:
        from generalist_cli.infer.transcribe import pack_setting, transcribe
        from generalist_cli.serve.batcher import Batcher
        from generalist_cli.serve.metrics import Metrics

        self.config, self.loaded, self.tok = config, loaded, loaded.tokenizer
        self.pack = pack_setting(loaded, config.model, config.pack)
        self.metrics = Metrics()
        self.lock = threading.Lock()
        self.batcher = Batcher(
            lambda audios, options: transcribe(loaded.model, self.tok, audios, options),
            max_batch=config.max_batch,
            max_wait=config.max_wait_ms / 1000,
            queue_size=config.queue_size,
            lock=self.lock,
            on_batch=self.metrics.batch,
        )

    def health(self) -> dict:
        from generalist_cli import __version__

        c = self.config
        return {"status": "ok", "model": c.model, "version": __version__, "queue": self.batcher.depth,
                "max_batch": c.max_batch, "pack": self.pack}  # fmt: skip

    async def read_upload(self, file: UploadFile) -> bytes:
        limit = int(self.config.max_mb * 1024 * 1024)
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise ApiError(
                413, f"{file.filename}: larger than the server's {self.config.max_mb:g} MB limit",
                kind="request_too_large",
            )  # fmt: skip
        if not data:
            raise ApiError(400, f"{file.filename}: is empty (0 bytes)")
        return data

    async def decode(self, file: UploadFile):
        from generalist_cli.errors import GenError
        from generalist_cli.media.audio import SAMPLE_RATE, decode_audio

        data = await self.read_upload(file)
        try:
            audio = await asyncio.to_thread(decode_audio, io.BytesIO(data))
        except GenError as exc:
            raise ApiError(400, f"{file.filename}: {getattr(exc, 'problem', exc.message)}") from None
        seconds = len(audio) / SAMPLE_RATE
        if seconds > self.config.max_seconds:
            raise ApiError(
                400,
                f"{file.filename}: audio lasts {seconds:.0f} s, over the server's {self.config.max_seconds:g} s limit",
            )
        return audio

    def language_of(self, language: str | None) -> str | None:
        from generalist_cli.errors import GenError
        from generalist_cli.infer.convert import check_language

        try:
            return check_language(self.tok, language, self.config.model)
        except GenError as exc:
            raise ApiError(400, exc.message) from None

    async def speech_to_text(self, file: UploadFile, *, task: str, language: str | None, prompt: str,
                             response_format: str):  # fmt: skip
        from generalist_cli.infer.transcribe import TranscribeOptions
        from generalist_cli.media.audio import SAMPLE_RATE
        from generalist_cli.serve.batcher import Busy

        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
                400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not {response_format!r}"
            )
        if task == "translate" and not self.tok.multilingual:
            raise ApiError(400, f"model {self.config.model} is English-only and cannot translate")
        # requests from different clients never share a window: text in a window is context for the rest of it
        options = TranscribeOptions(language=self.language_of(language), task=task, prompt=prompt or "",
                                    batch_size=max(8, self.config.max_batch), pack=self.pack,
                                    share_windows=False)  # fmt: skip
        audio = await self.decode(file)
        self.metrics.audio(len(audio) / SAMPLE_RATE)
        try:
            transcript = await asyncio.wrap_future(self.batcher.submit(audio, options))
        except Busy:
            self.metrics.reject()
            raise ApiError(503, "the server is busy: too many requests are waiting", kind="server_busy",
                           headers={"Retry-After": "1"}) from None  # fmt: skip
        return render(transcript, response_format, task=task)

    async def convert(self, *, to: str, file: UploadFile | None, text: str, lang: str, src_lang: str,
                      audio_format: str):  # fmt: skip
        """/v1/convert: the input (``text`` or an upload, told apart by content) to ``to``."""
        from generalist_cli.errors import GenError

        if to not in ("text", "speech"):
            raise ApiError(400, f"to must be text or speech, not {to!r}")
        if audio_format not in AUDIO_FORMATS:
            raise ApiError(400, f"audio_format must be one of {', '.join(AUDIO_FORMATS)}")
        if file is None and not text.strip():
            raise ApiError(400, "give a file or text")
        with tempfile.TemporaryDirectory(prefix="gen-serve-") as tmp:
            kind, source = "text", text
            if file is not None:
                kind, source = await self._upload_source(file, Path(tmp))
            language = self.language_of(lang)
            if (kind, to) == ("audio", "text"):
                await file.seek(0)
                return await self.speech_to_text(file, task="transcribe", language=lang or None, prompt="",
                                                 response_format="json")  # fmt: skip
            try:
                return await asyncio.to_thread(
                    self._convert, kind, source, to, language, self.language_of(src_lang), audio_format, Path(tmp)
                )
            except GenError as exc:
                raise ApiError(400, str(exc)) from None

    async def _upload_source(self, file: UploadFile, tmp: Path) -> tuple[str, Path | str]:
        """(modality, the text or the saved file) of an uploaded input."""
        from generalist_cli.errors import GenError
        from generalist_cli.infer import convert as conv

        path = tmp / ("input" + Path(file.filename or "").suffix.lower()[:8])
        path.write_bytes(await self.read_upload(file))
        try:
            kind = conv.detect_modality(path, **conv.modality_rule(self.loaded))
            return kind, conv.read_text(path) if kind == "text" else path
        except GenError as exc:
            raise ApiError(400, f"{file.filename}: {getattr(exc, 'problem', exc.message)}") from None

    def _convert(self, kind: str, source, to: str, language, src_lang, audio_format: str, tmp: Path):
        from generalist_cli.infer import convert as conv
        from generalist_cli.infer.transcribe import TranscribeOptions

        conv.check_request(self.loaded, self.config.model, {kind}, to, language)
        options = TranscribeOptions(
            language=language, batch_size=max(8, self.config.max_batch), pack=self.pack, share_windows=False
        )
        with self.lock:
            result = conv.convert(self.loaded, source, kind, to, language=language, src_lang=src_lang, options=options)
        if result.audio is None:
            return {k: v for k, v in result.as_json("").items() if k != "file"}
        from generalist_cli.media.audio import encode_audio

        out = tmp / f"speech.{audio_format}"
        encode_audio(out, result.audio)
        return Response(out.read_bytes(), media_type=AUDIO_FORMATS[audio_format])


def create_app(config: ServeConfig, loaded=None):
    """The app for ``config`` (``loaded``: an already opened model, else ``config.model`` is opened): the
    routes, error handlers and request metrics around a :class:`Service`."""
    from generalist_cli import __version__

    if loaded is None:
        from generalist_cli.store.store import open_model

        loaded = open_model(config.model, device=config.device, threads=config.threads or None)
    svc = Service(config, loaded)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        svc.batcher.close()

    app = FastAPI(title="gen serve", version=__version__, lifespan=lifespan,
                  description="Speech, text, sign video and speech synthesis with one generalist model.")  # fmt: skip
    app.state.batcher, app.state.metrics, app.state.loaded = svc.batcher, svc.metrics, loaded
    _handlers(app, svc)

    @app.get("/health")
    def health():
        return svc.health()

    @app.get("/metrics")
    def prometheus():
        return PlainTextResponse(svc.metrics.render(queue_depth=svc.batcher.depth),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")  # fmt: skip

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model: str = Form(""), language: str = Form(""),
                             prompt: str = Form(""), response_format: str = Form("json"),
                             temperature: float = Form(0.0)):  # fmt: skip
        """OpenAI-compatible transcription (``model`` and ``temperature`` are accepted and ignored:
        the server has one model and decodes greedily with its fallbacks)."""
        return await svc.speech_to_text(file, task="transcribe", language=language, prompt=prompt,
                                        response_format=response_format)  # fmt: skip

    @app.post("/v1/audio/translations")
    async def translations(file: UploadFile = File(...), model: str = Form(""), prompt: str = Form(""),
                           response_format: str = Form("json"), temperature: float = Form(0.0)):  # fmt: skip
        """OpenAI-compatible translation of speech into English text."""
        return await svc.speech_to_text(file, task="translate", language=None, prompt=prompt,
                                        response_format=response_format)  # fmt: skip

    @app.post("/v1/convert")
    async def convert(to: str = Form(...), file: Optional[UploadFile] = File(None), text: str = Form(""),
                      lang: str = Form(""), src_lang: str = Form(""), audio_format: str = Form("wav")):  # fmt: skip
        """Any conversion of ``gen run``: ``to`` = text | speech; the input is ``text`` or an uploaded file
        (text, audio or video, told apart by content). Speech comes back as audio (``audio_format``)."""
        return await svc.convert(to=to, file=file, text=text, lang=lang, src_lang=src_lang, audio_format=audio_format)

    return app


def _handlers(app, svc: Service) -> None:
    """OpenAI-shaped JSON errors (one log line for an unexpected one) and per-request metrics."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(
            {"error": {"message": exc.message, "type": exc.kind, "code": exc.status}},
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # one line in the log, JSON to the client
        import sys

        print(f"gen serve: {request.url.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return JSONResponse(
            {"error": {"message": f"internal error ({type(exc).__name__})", "type": "server_error", "code": 500}},
            status_code=500,
        )

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        svc.metrics.request(request.url.path, response.status_code, time.perf_counter() - start)
        return response


def render(transcript, fmt: str, *, task: str):
    """A transcript as OpenAI's API returns it in ``fmt``."""
    from generalist_cli.infer.writers import render as write

    if fmt == "json":
        return {"text": transcript.text}
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(write(transcript, fmt, file=""))
    return {
        "task": "translate" if task == "translate" else "transcribe",
        "language": transcript.language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [
            {
                "id": i,
                "start": s.start,
                "end": s.end,
                "text": s.text.strip(),
                "tokens": list(s.tokens),
                "avg_logprob": s.avg_logprob,
                "no_speech_prob": s.no_speech_prob,
                "temperature": 0.0,
            }
            for i, s in enumerate(transcript.segments)
        ],
    }


def app_from_env():
    """The app factory uvicorn's worker processes call (``gen serve --workers N``): config from the
    ``GEN_SERVE_CONFIG`` environment variable (JSON)."""
    import os

    return create_app(ServeConfig(**json.loads(os.environ["GEN_SERVE_CONFIG"])))
