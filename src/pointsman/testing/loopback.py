"""What the provider-specific loopback fakes (Gemini, Bedrock) share: a real aiohttp server in its
own thread, per-model `Behaviour` scripting, and the requests each model received."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pointsman.testing.upstream import Behaviour, ReceivedRequest, _abort, _new_event_loop

Json = dict[str, Any]
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 85


@dataclass(slots=True)
class Turn:
    """What a fake model saw in a request, in provider-neutral terms."""

    last_user_text: str
    prompt_chars: int
    images: int
    tools: list[str]
    answering_tool: bool
    max_tokens: int | None


@dataclass(slots=True)
class Reply:
    """What a fake model answers: words (each with its whitespace), or one tool call."""

    words: list[str]
    tool: str | None
    tool_arguments: str
    finish: str  # stop, length or tool
    prompt_tokens: int
    completion_tokens: int


def compose(model: str, turn: Turn, behaviour: Behaviour) -> Reply:
    """The answer a fake model gives to `turn`: it calls the first offered tool unless the turn
    answers a tool call, and otherwise says who it is, what it was told and how many images it saw."""
    prompt_tokens = turn.prompt_chars // CHARS_PER_TOKEN + IMAGE_TOKENS * turn.images + 1
    if turn.tools and behaviour.tool_call and not turn.answering_tool:
        return Reply([], turn.tools[0], behaviour.tool_arguments, "tool", prompt_tokens, 10)
    text = behaviour.reply
    if text is None:
        said = turn.last_user_text.split()
        text = f"Simulated answer from {model}."
        if turn.images:
            text += f" I see {turn.images} image(s)."
        if 0 < len(said) <= 8:
            text += f" You said: {' '.join(said)}"
    words = [w for w in _words(text)]
    finish = "stop"
    if turn.max_tokens is not None and turn.max_tokens < len(words):
        words, finish = words[: turn.max_tokens], "length"
    return Reply(words, None, "", finish, prompt_tokens, len(words))


def _words(text: str) -> list[str]:
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return out


class LoopbackServer:
    """A loopback HTTP server in its own thread; subclasses implement `handle`. Behaviours are set
    per model (`set(model, Behaviour(...))`); `requests(model)` returns what a model received."""

    thread_name = "pointsman-fake"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._behaviours: dict[str, Behaviour] = {}
        self._script_pos: dict[str, int] = {}
        self._received: dict[str, deque[ReceivedRequest]] = {}
        self._ids = itertools.count(1)
        self._runner: web.ServerRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set(self, model: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviours[model] = behaviour
            self._script_pos[model] = 0

    def requests(self, model: str) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._received.get(model, ()))

    def calls(self, model: str) -> int:
        return len(self.requests(model))

    def reset(self) -> None:
        with self._lock:
            self._behaviours.clear()
            self._script_pos.clear()
            self._received.clear()

    def arrive(self, model: str, request: web.BaseRequest, body: Json) -> Behaviour:
        """Record a request to `model`; the behaviour it meets (the next scripted one first)."""
        with self._lock:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self._received.setdefault(model, deque(maxlen=1000)).append(
                ReceivedRequest(request.path_qs, headers, body)
            )
            behaviour = self._behaviours.get(model, Behaviour())
            pos = self._script_pos.get(model, 0)
            if pos < len(behaviour.script):
                self._script_pos[model] = pos + 1
                return behaviour.script[pos]
            return behaviour

    def next_id(self) -> int:
        return next(self._ids)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raise NotImplementedError

    async def wait_as_told(self, request: web.BaseRequest, behaviour: Behaviour) -> None:
        """Latency, hangs and resets, before any answer."""
        if behaviour.reset:
            await _abort(request)
        if behaviour.hang:
            await asyncio.get_running_loop().create_future()
        if behaviour.latency_s > 0:
            await asyncio.sleep(behaviour.latency_s)

    async def send_stream(
        self, request: web.BaseRequest, headers: dict[str, str], frames: list[bytes], behaviour: Behaviour
    ) -> web.StreamResponse:
        """Write `frames` at the behaviour's pace; cut the connection after `fail_after_chunks`."""
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        cut = behaviour.fail_after_chunks
        pause = 1.0 / behaviour.tokens_per_s if behaviour.tokens_per_s > 0 else 0.0
        for i, frame in enumerate(frames if cut is None else frames[:cut]):
            if i and pause:
                await asyncio.sleep(pause)
            await response.write(frame)
        if cut is not None:
            await _abort(request)
        await response.write_eof()
        return response

    async def astart(self) -> None:
        server = web.Server(self.handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def astop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def start(self) -> None:
        """Serve in a daemon thread with its own event loop; returns once listening."""
        loop = _new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.astart())
            finally:
                started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name=self.thread_name, daemon=True)
        self._thread.start()
        started.wait()
        self._loop = loop

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.astop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
