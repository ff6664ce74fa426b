"""The OpenAI-compatible HTTP app: :func:`create_app` builds a FastAPI application (a plain
ASGI callable) around one model and its :class:`~autosteer.serve.engine.Engine`."""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from autosteer.serve.engine import Engine, Event, Row
from autosteer.serve.steering import (
    DEFAULT_MAX_COEFF,
    ModelInfo,
    Preset,
    RequestError,
    _json_type,
    load_preset,
    parse_steering,
)

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY", "DEFAULT_MAX_TOKENS", "DEFAULT_MAX_WAITING", "create_app"]

#: Largest request body accepted (bytes); a larger one is answered 413 before it is read.
DEFAULT_MAX_BODY = 1_000_000
#: Default and largest ``max_tokens`` of a request.
DEFAULT_MAX_TOKENS = 256
#: Requests decoded together in one batch.
DEFAULT_MAX_BATCH = 8
#: Requests that may wait for a batch row; one more is answered 429.
DEFAULT_MAX_WAITING = 64

_COMMON = {
    "model",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "steering",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
}
_CHAT_FIELDS = _COMMON | {"messages", "top_logprobs", "response_format", "metadata", "store"}
_COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "suffix", "best_of"}


def _refuse_constant(name: str):
    raise RequestError(
        f"the request body is not valid JSON: {name} is not a JSON number (JSON has no NaN or infinite numbers)", None
    )


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RequestError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}", None) from None
    if not isinstance(data, dict):
        raise RequestError(f"the request body must be a JSON object, got {_json_type(data)}", None)
    return data


def _int_field(body, name: str, lo: int, hi: int | None = None, default=None):
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise RequestError(f"{name} must be an integer, got {_json_type(v)}", name)
    if v < lo or (hi is not None and v > hi):
        raise RequestError(
            f"{name} must be between {lo} and {hi}, got {v}" if hi is not None else f"{name} must be >= {lo}, got {v}",
            name,
        )
    return v


def _num_field(body, name: str, lo: float, hi: float, default: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RequestError(f"{name} must be a number, got {_json_type(v)}", name)
    v = float(v)
    if not (math.isfinite(v) and lo <= v <= hi):
        raise RequestError(f"{name} must be between {lo:g} and {hi:g}, got {v!r}", name)
    return v


class _Served:
    """Everything the routes share."""

    def __init__(self, model, tokenizer, name, presets, engine, max_tokens, info):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.presets: dict[str, Preset] = presets
        self.engine: Engine = engine
        self.max_tokens = max_tokens
        self.info: ModelInfo = info
        self.max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.created = int(time.time())

    # ------------------------------------------------------------------ validation
    def common(self, body: Mapping[str, Any], allowed: set[str]) -> dict[str, Any]:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise RequestError(
                f"unknown field {unknown[0]!r} (this server reads: {', '.join(sorted(allowed))})", unknown[0]
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError(f"model must be a string naming the model, got {_json_type(model)}", "model")
        base, _, preset = model.partition("+")
        if base != self.name or (preset and preset not in self.presets):
            raise RequestError(
                f"The model '{model}' does not exist (GET /v1/models lists the models and MODEL+PRESET names)",
                "model",
                status=404,
                code="model_not_found",
            )
        if preset and body.get("steering") is not None:
            raise RequestError(
                f"model {model!r} selects preset {preset!r}: give no steering field with it, or "
                f"name the model {self.name!r}",
                "steering",
            )
        steering = parse_steering(preset if preset else body.get("steering"), self.presets, self.info)
        mt = _int_field(body, "max_tokens", 1, self.max_tokens)
        mct = _int_field(body, "max_completion_tokens", 1, self.max_tokens)
        if mt is not None and mct is not None and mt != mct:
            raise RequestError(
                f"max_tokens ({mt}) and max_completion_tokens ({mct}) disagree; give one", "max_completion_tokens"
            )
        max_tokens = mct if mct is not None else (mt if mt is not None else self.max_tokens)
        n = _int_field(body, "n", 1, None, 1)
        if n != 1:
            raise RequestError(f"n must be 1 (one choice per request), got {n}", "n")
        if _int_field(body, "best_of", 1, None, 1) != 1:
            raise RequestError("best_of must be 1", "best_of")
        for name in ("presence_penalty", "frequency_penalty"):
            if _num_field(body, name, -2.0, 2.0, 0.0) != 0.0:
                raise RequestError(f"{name} is not supported (give 0 or leave it out)", name)
        for name in ("logprobs", "echo"):
            v = body.get(name)
            if v not in (None, False, 0):
                raise RequestError(f"{name} is not supported (give false or leave it out)", name)
        if body.get("suffix") is not None:
            raise RequestError("suffix is not supported", "suffix")
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise RequestError(f"stream must be true or false, got {_json_type(stream)}", "stream")
        so = body.get("stream_options")
        include_usage = False
        if so is not None:
            if (
                not isinstance(so, dict)
                or set(so) - {"include_usage"}
                or not isinstance(so.get("include_usage", False), bool)
            ):
                raise RequestError("stream_options must be {\"include_usage\": true|false}", "stream_options")
            include_usage = so.get("include_usage", False)
        stop = body.get("stop")
        if stop is None:
            stops: tuple[str, ...] = ()
        elif isinstance(stop, str):
            stops = (stop,) if stop else ()
        elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop):
            stops = tuple(stop)
        else:
            raise RequestError(
                f"stop must be a non-empty string or a list of at most 4 of them, got {_json_type(stop)}", "stop"
            )
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64):
            raise RequestError(f"seed must be an integer, got {_json_type(seed)}", "seed")
        if body.get("user") is not None and not isinstance(body.get("user"), str):
            raise RequestError("user must be a string", "user")
        return {
            "model": model,
            "steering": steering,
            "max_tokens": max_tokens,
            "stream": stream,
            "include_usage": include_usage,
            "stop": stops,
            "seed": None if seed is None else seed % (2**63),
            "temperature": _num_field(body, "temperature", 0.0, 2.0, 1.0),
            "top_p": _num_field(body, "top_p", 0.0, 1.0, 1.0),
        }

    def tokens(self, ids: list[int], param: str) -> list[int]:
        if not ids:
            raise RequestError(f"{param} produces no tokens", param)
        if self.max_positions and len(ids) >= self.max_positions:
            raise RequestError(f"{param} has {len(ids)} tokens; the model reads at most {self.max_positions}", param)
        return list(ids)

    def chat_ids(self, body) -> list[int]:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise RequestError(
                f"messages must be a non-empty list of {{\"role\", \"content\"}} objects, got {_json_type(msgs)}",
                "messages",
            )
        clean = []
        for i, m in enumerate(msgs):
            where = f"messages[{i}]"
            if not isinstance(m, dict):
                raise RequestError(f"{where} must be an object with role and content, got {_json_type(m)}", where)
            role, content = m.get("role"), m.get("content")
            if role not in ("system", "developer", "user", "assistant"):
                raise RequestError(
                    f"{where}.role must be system, user or assistant, got {_json_type(role)}", f"{where}.role"
                )
            if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
                parts = []
                for j, p in enumerate(content):
                    if not (isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)):
                        raise RequestError(
                            f"{where}.content[{j}] must be {{\"type\": \"text\", \"text\": ...}}", f"{where}.content"
                        )
                    parts.append(p["text"])
                content = "".join(parts)
            if not isinstance(content, str):
                raise RequestError(f"{where}.content must be a string, got {_json_type(content)}", f"{where}.content")
            clean.append({"role": "system" if role == "developer" else role, "content": content})
        if not getattr(self.tokenizer, "chat_template", None):
            raise RequestError(
                f"model {self.name!r} has no chat template; use /v1/completions with a raw prompt", "messages"
            )
        try:
            text = self.tokenizer.apply_chat_template(clean, add_generation_prompt=True, tokenize=False)
        except Exception as exc:
            raise RequestError(f"the chat template refused the messages: {exc}", "messages") from None
        return self.tokens(self.tokenizer(text, add_special_tokens=False)["input_ids"], "messages")

    def completion_ids(self, body) -> list[int]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise RequestError(f"prompt must be a string, got {_json_type(prompt)}", "prompt")
        return self.tokens(self.tokenizer(prompt)["input_ids"], "prompt")


class _BodyLimit:
    """Pure ASGI middleware: a body over ``max_body`` bytes is answered 413 (by its
    Content-Length before any of it is read, else as soon as the count passes the limit)."""

    def __init__(self, app, max_body: int, api_key: str | None):
        self.app = app
        self.max_body = max_body
        self.api_key = api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope.get("path", "").startswith("/v1/"):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(auth.encode("latin-1"), f"Bearer {self.api_key}".encode()):
                return await _send_error(
                    send,
                    RequestError(
                        "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                        None,
                        status=401,
                        code="invalid_api_key",
                    ),
                )
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await _send_error(send, RequestError("Content-Length is not a number", None))
            if n > self.max_body:
                return await _send_error(send, _too_large(n, self.max_body))
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await _send_error(send, _too_large(seen, self.max_body))


class _TooLarge(Exception):
    pass


def _too_large(n: int, limit: int) -> RequestError:
    return RequestError(
        f"the request body has {'at least ' if n else ''}{n} bytes; this server takes at most {limit} (--max-body)",
        None,
        status=413,
    )


async def _send_error(send, err: RequestError) -> None:
    body = json.dumps(err.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": err.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + ([(b"www-authenticate", b"Bearer")] if err.status == 401 else []),
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error_response(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def create_app(
    model,
    tokenizer,
    *,
    presets: Mapping[str, str | os.PathLike] | None = None,
    model_name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_waiting: int = DEFAULT_MAX_WAITING,
    api_key: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_coeff: float = DEFAULT_MAX_COEFF,
) -> FastAPI:
    """An OpenAI-compatible FastAPI app serving ``model`` with per-request steering.

    ``presets``: name -> file (a ``best.json``, or a ``.safetensors`` / ``.gguf`` vector
    file), loaded and checked now.  ``model_name``: the id clients send (default: the
    model's ``name_or_path`` basename); ``MODEL+PRESET`` selects a preset.  ``max_batch``
    rows decode together; ``max_tokens`` is the default and the largest ``max_tokens`` of
    a request; ``max_waiting`` requests may wait for a row (then 429); ``api_key``: every
    ``/v1/`` request must send ``Authorization: Bearer <api_key>``; ``max_body``: larger
    bodies are answered 413; ``max_coeff``: the largest ``|coeff|`` a request may use.

    Routes: ``GET /v1/models``, ``GET /v1/presets``, ``POST /v1/chat/completions``,
    ``POST /v1/completions``, ``GET /health``, and the playground page at ``GET /``
    (see :mod:`autosteer.serve.playground`).  The result is a FastAPI app: add your own
    routes with ``app.include_router(router)`` (an ``APIRouter``) or ``@app.get(...)``;
    inside a route, ``request.app.state.autosteer`` holds the served model, tokenizer,
    presets and engine.  ``app.state.close()`` (also run at the app's shutdown) lets the
    requests in flight finish and stops the engine thread.  Mount it under a path with
    another app's ``app.mount("/steer", create_app(...))``; run it with
    ``uvicorn.run(app, host="127.0.0.1", port=8000)``.
    """
    from autosteer._checks import check_int
    from autosteer.steering.layers import find_decoder_layers, hidden_size_of

    max_batch = check_int("max_batch", max_batch, minimum=1)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    max_waiting = check_int("max_waiting", max_waiting, minimum=0)
    max_body = check_int("max_body", max_body, minimum=1)
    if api_key is not None and (not isinstance(api_key, str) or not api_key):
        raise RequestError("api_key must be a non-empty string or None")
    if model_name is None:
        model_name = os.path.basename(str(getattr(model, "name_or_path", "") or "").rstrip("/")) or "model"
    if "+" in model_name:
        raise RequestError(f"model_name {model_name!r} must not contain '+' (it separates MODEL+PRESET)")
    loaded: dict[str, Preset] = {}
    for name, path in (presets or {}).items():
        if not isinstance(name, str) or not name or "+" in name or name.strip() != name:
            raise RequestError(f"preset name {name!r} must be a non-empty string without '+' or surrounding spaces")
        loaded[name] = load_preset(name, path, model, tokenizer)
    info = ModelInfo(len(find_decoder_layers(model).layers), hidden_size_of(model), tokenizer, float(max_coeff))
    model.eval()
    engine = Engine(model, tokenizer, max_batch=max_batch, max_waiting=max_waiting)
    served = _Served(model, tokenizer, model_name, loaded, engine, max_tokens, info)

    async def lifespan(app):
        yield
        await asyncio.get_running_loop().run_in_executor(None, engine.close)

    app = FastAPI(title="AutoSteer", summary="OpenAI-compatible serving with per-request steering", lifespan=lifespan)
    app.state.autosteer = served
    app.state.close = engine.close
    app.add_middleware(_BodyLimit, max_body=max_body, api_key=api_key)

    @app.exception_handler(RequestError)
    async def _on_request_error(request, exc: RequestError):
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            {"error": {"message": str(exc.detail), "type": kind, "param": None, "code": None}},
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return _error_response(RequestError(f"{param}: {first.get('msg', 'invalid')}", param))

    @app.get("/health")
    async def health():
        return {"status": "ok", "busy": engine.busy, "cancelled": engine.stats["cancelled"], "pid": os.getpid()}

    @app.get("/v1/models")
    async def models():
        ids = [model_name] + [f"{model_name}+{p}" for p in loaded]
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": served.created, "owned_by": "autosteer"} for i in ids],
        }

    @app.get("/v1/presets")
    async def list_presets():
        return {
            "object": "list",
            "model": {"id": model_name, "num_layers": info.num_layers, "hidden_size": info.hidden_size},
            "data": [p.to_dict() for p in loaded.values()],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = _parse_body(await request.body())
        opts = served.common(body, _CHAT_FIELDS)
        return await _complete(request, served, opts, served.chat_ids(body), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = _parse_body(await request.body())
        opts = served.common(body, _COMPLETION_FIELDS)
        return await _complete(request, served, opts, served.completion_ids(body), chat=False)

    from autosteer.serve.playground.app import add_playground

    add_playground(app)  # the playground page at / (plain HTML/JS shipped in the package)
    return app


async def _complete(request: Request, served: _Served, opts: dict[str, Any], ids: list[int], chat: bool):
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def sink(event: Event) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the loop is gone (the server stopped)
            pass

    row = Row(
        prompt_ids=ids,
        max_tokens=opts["max_tokens"],
        sink=sink,
        steering=opts["steering"],
        temperature=opts["temperature"],
        top_p=opts["top_p"],
        seed=opts["seed"],
        stop=opts["stop"],
    )
    served.engine.submit(row)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    model = opts["model"]
    try:
        first = await _next(request, queue, row)
    except BaseException:
        row.cancel()
        raise
    if first.error is not None:
        raise _as_request_error(first.error)
    if not opts["stream"]:
        texts = [first.text]
        final = first
        try:
            while final.finish_reason is None:
                final = await _next(request, queue, row)
                texts.append(final.text)
        finally:
            if final.finish_reason is None:
                row.cancel()
        if final.error is not None:
            raise _as_request_error(final.error)
        text = "".join(texts)
        usage = _usage(final)
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": final.finish_reason,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": final.finish_reason}
            obj = "text_completion"
        return JSONResponse(
            {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": usage}
        )

    def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text:
                delta["content"] = text
            elif role:
                delta["content"] = ""
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return (
            "data: "
            + json.dumps({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]})
            + "\n\n"
        )

    async def events():
        event = first
        try:
            if chat:
                yield chunk(None, None, role=True)
            while True:
                if event.text:
                    yield chunk(event.text, None)
                if event.finish_reason is not None:
                    if event.error is not None:
                        err = _as_request_error(event.error)
                        yield "data: " + json.dumps(err.body()) + "\n\n"
                    else:
                        yield chunk(None, event.finish_reason)
                        if opts["include_usage"]:
                            yield (
                                "data: "
                                + json.dumps(
                                    {
                                        "id": rid,
                                        "object": "chat.completion.chunk" if chat else "text_completion",
                                        "created": created,
                                        "model": model,
                                        "choices": [],
                                        "usage": _usage(event),
                                    }
                                )
                                + "\n\n"
                            )
                    yield "data: [DONE]\n\n"
                    return
                event = await queue.get()
        finally:
            if not row.done:
                row.cancel()  # the client went away: its batch row frees at the next step

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _next(request: Request, queue: asyncio.Queue, row: Row) -> Event:
    """The next event of ``row``; a client that disconnects while waiting cancels the row."""
    while True:
        try:
            return await asyncio.wait_for(queue.get(), timeout=1.0)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                row.cancel()
                raise asyncio.CancelledError("client disconnected") from None


def _usage(event: Event) -> dict[str, int]:
    return {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.prompt_tokens + event.completion_tokens,
    }


def _as_request_error(exc: Exception) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    return RequestError(f"generation failed: {type(exc).__name__}: {exc}", None, status=500, type="server_error")
