"""What the proxy benchmarks share: pinned server processes, the load drivers, the report.

Layout on a two-core machine: the proxy under test runs alone on core 1 (`taskset -c 1`); the
fake upstream and every load generator (this process, wrk) share core 0. The fake upstream is
checked to sustain far more than any rate offered, so what is measured is the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from time import perf_counter
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PROXY_CPUS = "1"
LOAD_CPUS = "0"
# The client key both proxies check (LiteLLM refuses to start without a strong master key).
CLIENT_KEY = "sk-bench-7f3a9c1e5b2d48f6a0e4c8b1d9f2a6e3c5b7d1f4a8e2c6b0"
WRK_INSTALL = "apt-get update && apt-get install -y wrk"

# --- the request -------------------------------------------------------------------------------

_PROMPT = (
    "Summarise the following note for a colleague in two sentences, keeping every date and "
    "figure. The quarterly review moved to the second week of March; the budget line for "
    "travel went down by twelve percent while the tooling line rose by nine. Two hires start "
    "in April, one in support and one in data engineering, and the office move is on hold "
    "until the lease talks finish. Facilities asked every team to list the equipment it needs "
    "moved and the meetings it cannot hold remotely. The customer advisory board meets on the "
    "fourth, and its agenda still lacks the pricing update; finance owes a one-page summary by "
    "Friday. Please also flag anything that looks like a risk to the launch date."
)


def chat_body(model: str = "auto", *, stream: bool = False) -> bytes:
    """The benchmark's chat request: about 1 KB of JSON, a system and a user message."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for an operations team."},
            {"role": "user", "content": _PROMPT},
        ],
        "max_tokens": 128,
        "temperature": 0.2,
        "user": "bench",
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def responses_body(model: str = "auto", *, stream: bool = False) -> bytes:
    """`chat_body`'s request in the Responses API's form (instructions, input, max_output_tokens)."""
    body: dict[str, Any] = {
        "model": model,
        "instructions": "You are a concise assistant for an operations team.",
        "input": [{"role": "user", "content": _PROMPT}],
        "max_output_tokens": 128,
        "temperature": 0.2,
        "user": "bench",
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


# The default features of a served router: a client key checked, a rules (or conditions) strategy
# evaluated on every request (the request matches no rule, so every one is checked), records in
# SQLite, decision headers.
_ROUTES: dict[str, list[tuple[str, dict[str, Any], list[str]]]] = {
    # name: (condition name, condition, deployments) in the strategy's own syntax
    "conditions": [
        ("vision", {"images": True}, ["large"]),
        ("code", {"regex": r"```|\bdef |\bclass "}, ["coder"]),
        ("long", {"min_tokens": 6000}, ["large"]),
        ("premium", {"headers": {"x-pointsman-tier": "premium"}}, ["large"]),
    ],
    "rules": [
        ("vision", {"images": {"gt": 0}}, ["large"]),
        ("code", {"text": {"regex": r"```|\bdef |\bclass "}}, ["coder"]),
        ("long", {"tokens": {"gte": 6000}}, ["large"]),
        ("premium", {"user_tier": "premium"}, ["large"]),
    ],
}


def default_strategy() -> str:
    """The rules strategy where this checkout has it, else conditions."""
    from pointsman.strategies import STRATEGIES

    return "rules" if "rules" in STRATEGIES else "conditions"


def pointsman_config(upstream_url: str, db: Path, strategy: str = "conditions") -> dict[str, Any]:
    def deployment(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "openai",
            "model": f"bench-{name}",
            "api_base": f"{upstream_url}/{name}/v1",
            "api_key": "sk-upstream",
            "price": {"input": 0.15, "output": 0.60},
            **extra,
        }

    routes = _ROUTES[strategy]
    if strategy == "rules":
        options: dict[str, Any] = {
            "rules": [{"name": n, "when": w, "then": {"deployments": d}} for n, w, d in routes],
            "default": {"deployments": ["small", "large"]},
        }
    else:
        options = {"conditions": [{"name": n, "when": w, "use": d} for n, w, d in routes]}
    return {
        "server": {"api_keys": [CLIENT_KEY]},
        "store": {"path": str(db)},
        "deployments": [
            deployment("small"),
            deployment("large", capabilities={"vision": True}, context_window=200_000),
            deployment("coder"),
        ],
        "models": {
            "auto": {
                "strategy": strategy,
                "deployments": ["small", "large"],
                "fallbacks": ["coder"],
                "options": options,
            }
        },
    }


DIRECT_PATH = "/small/v1/chat/completions"  # the deployment pointsman routes the request to
PROXY_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"

# --- processes -----------------------------------------------------------------------------------


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pin_self(cpus: str = LOAD_CPUS) -> bool:
    """Pin this process (the load generator) to the load core; False where it cannot."""
    if not can_pin():
        return False
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server process under test (and its children, for multi-worker servers)."""

    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def pids(self) -> list[int]:
        found, todo = [], [self.popen.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                    todo += [int(c) for c in children]
        return found

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process tree so far."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the process tree."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_server(
    name: str,
    argv: Sequence[str],
    port: int,
    health_path: str,
    workdir: Path,
    *,
    cpus: str | None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Server:
    """Start `argv` (pinned to `cpus` where possible) and wait until `health_path` answers."""
    log = workdir / f"{name}.log"
    command = [*(["taskset", "-c", cpus] if cpus and can_pin() else []), *argv]
    with log.open("wb") as out:
        popen = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = Server(name, popen, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + health_path, timeout=2):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"{name} did not answer {health_path} within {timeout:g}s") from None
            time.sleep(0.1)


def start_upstream(workdir: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "pointsman.testing", "--port", str(port), "--keep-requests", "0"]
    return start_server("upstream", argv, port, "/healthz", workdir, cpus=LOAD_CPUS)


def start_pointsman(
    workdir: Path,
    upstream: Server,
    *,
    workers: int = 1,
    cpus: str = PROXY_CPUS,
    strategy: str = "conditions",
    env: dict[str, str] | None = None,
) -> Server:
    port = free_port()
    config = workdir / "pointsman.yaml"
    config.write_bytes(orjson.dumps(pointsman_config(upstream.url, workdir / "records.db", strategy)))
    argv = [sys.executable, "-m", "pointsman", "serve", "--config", str(config), "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return start_server("pointsman", argv, port, "/healthz", workdir, cpus=cpus, env=env)


@contextlib.contextmanager
def workspace(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pointsman-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- load ----------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9, mean and max of `values` (milliseconds in, milliseconds out)."""
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": round(at(0.50), 3),
        "p90": round(at(0.90), 3),
        "p99": round(at(0.99), 3),
        "p99.9": round(at(0.999), 3),
        "mean": round(sum(ordered) / len(ordered), 3),
        "max": round(ordered[-1], 3),
    }


@dataclass
class LoadResult:
    """One load run against one target."""

    target: str
    tool: str
    mode: str  # "open" (fixed arrival rate) or "closed" (fixed concurrency, saturation)
    offered_rate: float | None
    concurrency: int | None
    duration_s: float
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    achieved_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    ttfb_ms: dict[str, float] = field(default_factory=dict)
    send_lag_ms: dict[str, float] = field(default_factory=dict)
    server_cpu_us_per_request: float | None = None
    server_cpu_share: float | None = None
    driver_cpu_share: float | None = None
    # Open loop: the largest growth of median latency within a slice, last fifth of the answers
    # against the first fifth (ms); a proxy that falls behind builds a backlog that shows here.
    backlog_growth_ms: float | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def sustained(self) -> bool:
        """Kept up with the offered rate: under 1% errors, completions at 98% of the rate, and
        no growing backlog (median latency at the end of a slice not more than double that at
        its start, give or take 5 ms)."""
        if self.mode != "open" or not self.offered_rate:
            return self.error_count == 0
        return (
            self.error_count <= 0.01 * max(self.sent, 1)
            and self.achieved_rate >= 0.98 * self.offered_rate
            and self.backlog_growth_ms is not None
            and self.backlog_growth_ms <= max(5.0, self.latency_ms.get("p50", 0.0))
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sustained"] = self.sustained()
        return data


class _Tally:
    def __init__(self) -> None:
        self.latency: list[float] = []
        self.ttfb: list[float] = []
        self.lag: list[float] = []
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.ok = 0
        self.started = 0.0  # when the measured phase's first request was due
        self.last_done = 0.0
        self.span = 0.0  # seconds the measured phase took, first due send to last answer
        self.warmup_sent = 0
        self.growth = 0.0  # ms: see LoadResult.backlog_growth_ms

    def merge(self, other: _Tally) -> None:
        """Add another slice's samples (an interleaved run is several slices per target)."""
        self.latency += other.latency
        self.ttfb += other.ttfb
        self.lag += other.lag
        self.errors.update(other.errors)
        self.sent += other.sent
        self.ok += other.ok
        self.span += other.span
        self.warmup_sent += other.warmup_sent
        self.growth = max(self.growth, other.growth)


async def _request(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    tally: _Tally | None,
    scheduled: float | None = None,
) -> None:
    start = perf_counter()
    ttfb = None
    try:
        async with session.post(url, data=body, headers=_HEADERS) as response:
            if stream:
                first = await response.content.readany()
                ttfb = perf_counter() - start
                while first:
                    first = await response.content.readany()
            else:
                await response.read()
            status = response.status
    except Exception as exc:  # counted, never raised: a load run reports its failures
        if tally is not None:
            tally.sent += 1
            tally.errors[type(exc).__name__] += 1
        return
    end = perf_counter()
    if tally is None:
        return
    tally.last_done = max(tally.last_done, end)
    tally.sent += 1
    if status != 200:
        tally.errors[f"http {status}"] += 1
        return
    tally.ok += 1
    tally.latency.append((end - start) * 1000)
    if ttfb is not None:
        tally.ttfb.append(ttfb * 1000)
    if scheduled is not None:
        tally.lag.append((start - scheduled) * 1000)


_HEADERS = {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"}


def _session(timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=75),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def open_loop(
    url: str,
    body: bytes,
    rate: float,
    duration: float,
    *,
    stream: bool = False,
    arrivals: str = "uniform",
    warmup: float = 1.0,
    timeout: float = 30.0,
    seed: int = 0,
) -> _Tally:
    """Send at a fixed arrival rate whatever the answers do (so queueing shows in latency).

    Latency runs from the moment a request is sent; how late the send was against its schedule
    (the timer's granularity, or a driver falling behind) is kept apart as `send_lag`.
    """
    rng = random.Random(seed)
    tally = _Tally()
    async with _session(timeout) as session:
        tasks: set[asyncio.Task[None]] = set()
        for phase, seconds in (("warmup", warmup), ("measure", duration)):
            count = max(1, round(rate * seconds)) if seconds > 0 else 0
            t0 = perf_counter() + 0.005
            if phase == "measure":
                tally.started = t0
            offset = 0.0
            for _ in range(count):
                scheduled = t0 + offset
                delay = scheduled - perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(
                    _request(session, url, body, stream, tally if phase == "measure" else None, scheduled)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                offset += rng.expovariate(rate) if arrivals == "poisson" else 1.0 / rate
            if phase == "warmup":
                tally.warmup_sent = count
                if tasks:
                    await asyncio.gather(*tasks)
        if tasks:
            await asyncio.gather(*tasks)
    # A proxy that cannot keep up stretches the span, so completions per second fall below the rate.
    tally.span = max(duration, tally.last_done - tally.started)
    tally.growth = _growth(tally.latency)
    return tally


def _growth(latencies: Sequence[float]) -> float:
    """Median latency of the last fifth of the answers minus that of the first fifth (ms)."""
    fifth = len(latencies) // 5
    if fifth < 2:
        return 0.0
    return max(0.0, statistics.median(latencies[-fifth:]) - statistics.median(latencies[:fifth]))


async def closed_loop(
    url: str, body: bytes, concurrency: int, duration: float, *, timeout: float = 30.0
) -> _Tally:
    """`concurrency` clients each sending the next request as soon as the last one answered."""
    tally = _Tally()
    async with _session(timeout) as session:
        await asyncio.gather(*(_request(session, url, body, False, None) for _ in range(concurrency)))
        stop = perf_counter() + duration

        async def client() -> None:
            while perf_counter() < stop:
                await _request(session, url, body, False, tally)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return tally


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_open(
    target: str,
    url: str,
    body: bytes,
    rate: float,
    duration: float,
    *,
    server: Server | None = None,
    stream: bool = False,
    arrivals: str = "uniform",
    warmup: float = 1.0,
) -> LoadResult:
    """An open-loop run at `rate` req/s, with the server's CPU per request when given one."""
    return run_open_interleaved(
        {target: (url, body, server)},
        rate,
        duration,
        slices=1,
        stream=stream,
        arrivals=arrivals,
        warmup=warmup,
    )[target]


def run_open_interleaved(
    targets: dict[str, tuple[str, bytes, Server | None]],
    rate: float,
    duration: float,
    *,
    slices: int = 5,
    stream: bool = False,
    arrivals: str = "uniform",
    warmup: float = 1.0,
) -> dict[str, LoadResult]:
    """Open-loop runs of every target at `rate`, taking turns in `slices` slices each, so that
    other work on a shared machine falls on all targets alike; percentiles pool every slice."""
    tallies = {name: _Tally() for name in targets}
    cpu = dict.fromkeys(targets, 0.0)
    own = dict.fromkeys(targets, 0.0)
    wall = dict.fromkeys(targets, 0.0)
    for i in range(slices):
        for name, (url, body, server) in targets.items():
            cpu0 = server.cpu_seconds() if server else 0.0
            own0, wall0 = time.process_time(), perf_counter()
            tally = run_async(
                open_loop(
                    url,
                    body,
                    rate,
                    duration / slices,
                    stream=stream,
                    arrivals=arrivals,
                    # Each slice opens new connections: a short warm-up, the first one in full.
                    warmup=warmup if i == 0 else min(warmup, 0.3),
                    seed=i,
                )
            )
            wall[name] += perf_counter() - wall0
            own[name] += time.process_time() - own0
            if server is not None:
                cpu[name] += server.cpu_seconds() - cpu0
            tallies[name].merge(tally)
    return {
        name: _result(
            name,
            "python-open-loop",
            "open",
            rate,
            None,
            duration,
            tallies[name],
            wall[name],
            own[name],
            cpu[name] if server is not None else None,
        )
        for name, (_, _, server) in targets.items()
    }


def run_closed_python(
    target: str, url: str, body: bytes, concurrency: int, duration: float, server: Server | None
) -> LoadResult:
    cpu0 = server.cpu_seconds() if server else 0.0
    own0, wall0 = time.process_time(), perf_counter()
    tally = run_async(closed_loop(url, body, concurrency, duration))
    wall = perf_counter() - wall0
    cpu = server.cpu_seconds() - cpu0 if server else None
    return _result(
        target,
        "python-closed-loop",
        "closed",
        None,
        concurrency,
        duration,
        tally,
        wall,
        time.process_time() - own0,
        cpu,
    )


def _result(
    target: str,
    tool: str,
    mode: str,
    rate: float | None,
    concurrency: int | None,
    duration: float,
    tally: _Tally,
    wall: float,
    own_cpu: float,
    server_cpu: float | None,
) -> LoadResult:
    result = LoadResult(target, tool, mode, rate, concurrency, duration)
    result.sent, result.ok, result.errors = tally.sent, tally.ok, dict(tally.errors)
    result.latency_ms = percentiles(tally.latency)
    result.ttfb_ms = percentiles(tally.ttfb)
    result.send_lag_ms = percentiles(tally.lag)
    span = tally.span if mode == "open" and tally.span else duration
    result.achieved_rate = round(tally.ok / max(span, 1e-9), 1)
    if mode == "open":
        result.backlog_growth_ms = round(tally.growth, 3)
    result.driver_cpu_share = round(own_cpu / max(wall, 1e-9), 3)
    if server_cpu is not None:
        # The server also served the warm-up requests during the time measured.
        handled = tally.sent + tally.warmup_sent
        if handled:
            result.server_cpu_us_per_request = round(server_cpu / handled * 1e6, 1)
        result.server_cpu_share = round(server_cpu / max(wall, 1e-9), 3)
    return result


# --- wrk -----------------------------------------------------------------------------------------

_WRK_LUA = """-- POST the benchmark's chat request (generated by bench/harness.py)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local f = assert(io.open("{path}", "rb"))
wrk.body = f:read("*a")
f:close()
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    target: str,
    url: str,
    body: bytes,
    concurrency: int,
    duration: float,
    workdir: Path,
    *,
    server: Server | None = None,
) -> LoadResult:
    """Closed loop at saturation with wrk (one thread on the load core)."""
    body_file = workdir / "wrk-body.json"
    body_file.write_bytes(body)
    script = workdir / "wrk-post.lua"
    script.write_text(_WRK_LUA.format(path=body_file, key=CLIENT_KEY))
    seconds = max(1, round(duration))
    command = [
        *(["taskset", "-c", LOAD_CPUS] if can_pin() else []),
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    cpu0 = server.cpu_seconds() if server else 0.0
    wall0 = perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = perf_counter() - wall0
    result = LoadResult(target, "wrk", "closed", None, concurrency, seconds)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors: dict[str, int] = {}
    if bad:
        errors["non-2xx"] = int(bad.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        for kind, count in zip(("connect", "read", "write", "timeout"), sock.groups(), strict=True):
            if int(count):
                errors[f"socket {kind}"] = int(count)
    result.sent = total
    result.ok = total - errors.get("non-2xx", 0)
    result.errors = errors
    result.achieved_rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    result.latency_ms = {f"p{q}": round(_ms(v), 3) for q, v in dist.items()}
    avg = re.search(r"Latency\s+(\S+)\s+\S+\s+(\S+)", out)
    if avg:
        result.latency_ms["mean"] = round(_ms(avg.group(1)), 3)
        result.latency_ms["max"] = round(_ms(avg.group(2)), 3)
    if server is not None:
        cpu = server.cpu_seconds() - cpu0
        if total:
            result.server_cpu_us_per_request = round(cpu / total * 1e6, 1)
        result.server_cpu_share = round(cpu / max(wall, 1e-9), 3)
    return result


def saturate(
    target: str,
    url: str,
    body: bytes,
    concurrency: int,
    duration: float,
    workdir: Path,
    *,
    server: Server | None = None,
    use_wrk: bool = True,
) -> LoadResult:
    """Saturation throughput with wrk where installed, else with the Python closed-loop driver."""
    if use_wrk and have_wrk():
        return run_wrk(target, url, body, concurrency, duration, workdir, server=server)
    return run_closed_python(target, url, body, concurrency, duration, server)


def warn_without_wrk() -> None:
    if not have_wrk():
        print(
            f"note: wrk not found; saturation uses the Python closed-loop driver, which shares the "
            f"load core and so reads lower. Install wrk with: {WRK_INSTALL}",
            file=sys.stderr,
        )


# --- conditions and report -----------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def busiest_processes(limit: int = 4) -> list[str]:
    """Other processes using CPU right now (what else the machine is doing)."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True
        ).stdout
    except OSError:
        return []
    lines = []
    for line in out.splitlines()[1:]:
        pid, cpu, args = line.strip().split(None, 2)
        if int(pid) == os.getpid() or float(cpu) < 5:
            continue
        lines.append(f"{cpu}% {args[:100]}")
    return lines[:limit]


def conditions() -> dict[str, Any]:
    """The machine and software a result was measured on."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk_version = None
    if have_wrk():
        probe = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk_version = (probe.stdout or probe.stderr).split("[")[0].strip()
    import pointsman

    def git(*args: str) -> str:
        probe = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return probe.stdout.strip()

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "pointsman_source": str(Path(pointsman.__file__).parent),
        "host": platform.node(),
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "loadavg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
        "other_busy_processes": busiest_processes(),
        "pinned": can_pin(),
        "proxy_cpus": PROXY_CPUS if can_pin() else "any",
        "load_cpus": LOAD_CPUS if can_pin() else "any",
        "python": platform.python_version(),
        "versions": {
            p: _version(p)
            for p in ("pointsman", "uvicorn", "starlette", "aiohttp", "uvloop", "httptools", "orjson")
        },
        "wrk": wrk_version,
    }


def check_quiet(max_load: float) -> None:
    """Say so when the machine is busy: other work on these two cores skews every figure."""
    load = os.getloadavg()[0]
    if load > max_load:
        others = "; ".join(busiest_processes()) or "unknown"
        print(
            f"warning: 1-minute load average is {load:.2f} (> {max_load:g}); figures will be noisy. "
            f"Busy: {others}",
            file=sys.stderr,
        )


def save(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    """Write `data` as JSON to bench/results/<name>-<time>.json (or `out`)."""
    path = out or RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return path


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*("" if v is None else f"{v:,.3f}" if isinstance(v, float) else str(v) for v in row))
    Console(width=max(100, shutil.get_terminal_size().columns)).print(t)


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
