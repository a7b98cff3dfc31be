"""Promises under load and outages, on three real `pointsman serve` replicas sharing their own
Redis and their own PostgreSQL (both started here, on free ports, and stopped here: the shared
ones of the machine are never touched).

    python -m bench.adversity            # the full figures (a few minutes)
    python -m bench.adversity --quick    # shorter outages and loads (about a minute)

Phases:
1. rate limit: a 100 req/min key hit with 600 requests at >= 1,000 req/s over the replicas;
2. budget: a $1 budget hit with 900 requests at 3,000 req/s;
3. Redis stopped (the process killed) for 20 s under 20 req/s, then started again;
4. PostgreSQL stopped (`pg_ctl stop -m immediate`) for 20 s under 20 req/s, then started again;
5. kill -9 of a replica under load, with PostgreSQL up, with PostgreSQL away, and with SQLite.
Each prints what it promises and what it measured; `--json` writes them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.harness import Server, free_port, start_server, start_upstream, workspace

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MASTER = "mk-bench-adversity"
FLUSH_S = 0.2
BODY = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


# -- dependencies of our own ------------------------------------------------------------------


class OwnRedis:
    """A redis-server on a free port, without persistence; `stop` kills it, `start` restarts it
    on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


class OwnPostgres:
    """A throwaway PostgreSQL cluster under the work directory (run as the `postgres` user when
    this is root, as initdb insists)."""

    def __init__(self) -> None:
        self.port = free_port()
        # Its own directory: the `postgres` user must be able to reach it.
        self.data = Path(tempfile.mkdtemp(prefix="pointsman-bench-pg-"))
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.data, "postgres", "postgres")
        self._run(PG_BIN / "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: Any) -> None:
        subprocess.run([*self.as_user, *map(str, argv)], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=on"
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-o", options, "-w", "-l", self.data / "log", "start")
        wait_port(self.port)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.1)


# -- replicas -------------------------------------------------------------------------------


def replica_config(upstream: Server, redis_port: int | None, store: dict[str, Any]) -> dict[str, Any]:
    deployments = [
        {
            "name": name,
            "provider": "openai",
            "model": name,
            "api_base": f"{upstream.url}/{name}/v1",
            # ~1 cent a request (a few tokens at $1,000 per million), so a $1 budget is ~100.
            "price": {"input": 1000.0, "output": 1000.0},
            "timeouts": {"total": 10},
        }
        for name in ("primary", "backup")
    ]
    config: dict[str, Any] = {
        "router": {"backoff_base_s": 0.0},
        "auth": {"enabled": True},
        "store": {"flush_interval_s": FLUSH_S, **store},
        "deployments": deployments,
        "models": {"auto": {"deployments": ["primary", "backup"]}},
    }
    if redis_port is not None:
        config["state"] = {"url": f"redis://127.0.0.1:{redis_port}/0", "prefix": f"adv{time.time_ns()}"}
    return config


@dataclass
class Replicas:
    servers: list[Server]
    config_path: Path

    def url(self, i: int) -> str:
        return self.servers[i % len(self.servers)].url

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_replicas(workdir: Path, config: dict[str, Any], count: int = 3, tag: str = "r") -> Replicas:
    path = workdir / f"{tag}.yaml"
    path.write_bytes(orjson.dumps(config))
    servers = []
    for i in range(count):
        port = free_port()
        argv = [sys.executable, "-m", "pointsman", "serve", "--config", str(path), "--port", str(port)]
        argv += ["--db", str(workdir / f"{tag}.db")]
        servers.append(
            start_server(
                f"{tag}{i}", argv, port, "/healthz", workdir, cpus=None, env={"POINTSMAN_MASTER_KEY": MASTER}
            )
        )
    return Replicas(servers, path)


def new_key(replicas: Replicas, **spec: Any) -> str:
    request = urllib.request.Request(
        f"{replicas.url(0)}/admin/keys",
        method="POST",
        data=orjson.dumps({"name": "bench", **spec}),
        headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(orjson.loads(response.read())["key"])


# -- load -----------------------------------------------------------------------------------


@dataclass
class Load:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    ok_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def failed(self) -> int:
        return self.sent - self.count(200)


async def _offer(urls: list[str], key: str, count: int, rate: float, stop_after: float | None = None) -> Load:
    """`count` requests at `rate` a second, round robin over `urls` (open loop: each is sent on
    time whether or not the earlier ones were answered)."""
    load = Load()
    body = orjson.dumps(BODY)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            try:
                async with session.post(
                    f"{urls[i % len(urls)]}/v1/chat/completions", data=body, headers=headers
                ) as r:
                    await r.read()
                    load.statuses[r.status] = load.statuses.get(r.status, 0) + 1
                    if r.status == 200:
                        load.ok_ids.append(r.headers["x-pointsman-request-id"])
            except (TimeoutError, aiohttp.ClientError):
                load.statuses[0] = load.statuses.get(0, 0) + 1

        started = time.perf_counter()
        tasks = []
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop_after is not None and time.perf_counter() - started > stop_after:
                break
            tasks.append(asyncio.ensure_future(one(i)))
            load.sent += 1
        load.seconds = time.perf_counter() - started
        await asyncio.gather(*tasks)
    return load


def offer(urls: list[str], key: str, count: int, rate: float) -> Load:
    return asyncio.run(_offer(urls, key, count, rate))


def recorded_ids(pg: OwnPostgres, schema: str) -> list[str]:
    return [r[0] for r in pg.query(f'SELECT request_id FROM "{schema}".requests')]


def wait_records(pg: OwnPostgres, schema: str, want: set[str], timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = recorded_ids(pg, schema)
        if want <= set(ids) or time.monotonic() > deadline:
            time.sleep(1.0)
            return recorded_ids(pg, schema)
        time.sleep(0.5)


# -- phases -----------------------------------------------------------------------------------


def phase_rate(replicas: Replicas, quick: bool) -> dict[str, Any]:
    key = new_key(replicas, rpm=100)
    load = offer([replicas.url(i) for i in range(3)], key, 600, 1000.0 if quick else 1500.0)
    return {
        "promise": "a 100 req/min key admits at most 100 requests a minute across 3 replicas",
        "requests": load.sent,
        "offered_rate": round(load.rate),
        "accepted": load.count(200),
        "refused_429": load.count(429),
        "other": load.failed() - load.count(429),
        "holds": load.count(200) <= 100,
    }


def phase_budget(replicas: Replicas, pg: OwnPostgres, schema: str) -> dict[str, Any]:
    key = new_key(replicas, budget=1.0)
    load = offer([replicas.url(i) for i in range(3)], key, 900, 3000.0)
    wait_records(pg, schema, set(load.ok_ids))
    rows = pg.query(
        f'SELECT COALESCE(SUM(cost), 0), COALESCE(MAX(cost), 0) FROM "{schema}".requests'
        f" WHERE request_id IN ({','.join(repr(i) for i in load.ok_ids) or 'NULL'})"
    )
    spent, largest = float(rows[0][0]), float(rows[0][1])
    return {
        "promise": "a $1 budget is not overspent beyond one request's cost",
        "requests": load.sent,
        "offered_rate": round(load.rate),
        "accepted": load.count(200),
        "refused_429": load.count(429),
        "spent": round(spent, 6),
        "one_request_cost": round(largest, 6),
        "holds": spent <= 1.0 + largest + 1e-9,
    }


def phase_outage(
    replicas: Replicas, pg: OwnPostgres, schema: str, what: str, stop: Any, start: Any, outage_s: float
) -> dict[str, Any]:
    key = new_key(replicas, rpm=100_000, budget=10_000.0)
    urls = [replicas.url(i) for i in range(3)]
    offer(urls, key, 6, 20.0)  # every replica has seen the key
    rate, before, after = 20.0, 5.0, 10.0

    def outage() -> None:
        time.sleep(before)
        stop()
        time.sleep(outage_s)
        start()

    async def run() -> Load:
        load, _ = await asyncio.gather(
            _offer(urls, key, int(rate * (before + outage_s + after)), rate), asyncio.to_thread(outage)
        )
        return load

    load = asyncio.run(run())
    recorded = wait_records(pg, schema, set(load.ok_ids), timeout=60)
    ours = [i for i in recorded if i in set(load.ok_ids)]
    return {
        "promise": f"{what} stopped for {outage_s:g} s under {rate:g} req/s:"
        " no failed request, no record lost or doubled",
        "requests": load.sent,
        "failed": load.failed(),
        "statuses": load.statuses,
        "lost_records": len(set(load.ok_ids) - set(recorded)),
        "duplicated_records": len(ours) - len(set(ours)),
        "holds": load.failed() == 0 and set(load.ok_ids) <= set(recorded) and len(ours) == len(set(ours)),
    }


def phase_kill(
    workdir: Path, upstream: Server, pg: OwnPostgres | None, cut: bool, rate: float
) -> dict[str, Any]:
    """One replica under `rate` req/s, killed with SIGKILL after a few seconds; a new one on the
    same spill directory replays what the dead one spilled. Lost = acknowledged minus recorded."""
    schema = f"kill{time.time_ns() % 10**9}"
    store: dict[str, Any] = {"url": pg.url, "schema": schema} if pg is not None else {}
    tag = f"k{schema}"
    config = replica_config(upstream, None, store)
    config["auth"] = {"enabled": False}
    replicas = start_replicas(workdir, config, count=1, tag=tag)
    url = replicas.url(0)
    try:
        offer([url], "sk-any", 10, 20.0)  # the writer is past its start-up
        if cut and pg is not None:
            pg.stop()

        async def run() -> Load:
            async def killer() -> None:
                await asyncio.sleep(3.0)
                os.kill(replicas.servers[0].popen.pid, signal.SIGKILL)

            task = asyncio.ensure_future(killer())
            load = await _offer([url], "sk-any", int(rate * 5), rate)
            await task
            return load

        load = asyncio.run(run())
    finally:
        replicas.stop()
    acknowledged = set(load.ok_ids)
    if pg is not None:
        if cut:
            pg.start()
        again = start_replicas(workdir, config, count=1, tag=tag)  # replays the dead one's spill
        try:
            recorded = wait_records(pg, schema, acknowledged, timeout=30)
        finally:
            again.stop()
    else:
        from pointsman.store import read_records

        recorded = [r["request_id"] for r in read_records(workdir / f"{tag}.db", limit=1_000_000)]
    lost = len(acknowledged - set(recorded))
    bound = rate * FLUSH_S
    return {
        "promise": f"kill -9 at {rate:g} req/s loses at most one flush interval ({FLUSH_S} s) of records",
        "store": "sqlite" if pg is None else ("postgresql, away" if cut else "postgresql"),
        "acknowledged": len(acknowledged),
        "lost_records": lost,
        "bound": bound,
        "duplicated_records": len(recorded) - len(set(recorded)),
        "holds": lost <= bound,
    }


@contextlib.contextmanager
def dependencies(workdir: Path) -> Iterator[tuple[OwnRedis, OwnPostgres]]:
    redis = OwnRedis(workdir)
    pg = OwnPostgres()
    redis.start()
    pg.start()
    try:
        yield redis, pg
    finally:
        redis.stop()
        pg.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s outages instead of 20 s")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--phases",
        default="rate,budget,redis,postgres,kill",
        help="comma-separated subset of: rate, budget, redis, postgres, kill",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    outage_s = 5.0 if args.quick else 20.0
    results: dict[str, Any] = {"quick": args.quick, "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    phases = set(args.phases.split(","))
    with workspace(args.keep) as workdir, dependencies(workdir) as (redis, pg):
        upstream = start_upstream(workdir)
        try:
            schema = "shared"
            config = replica_config(upstream, redis.port, {"url": pg.url, "schema": schema})
            replicas = start_replicas(workdir, config)
            try:
                if "rate" in phases:
                    results["rate_limit"] = phase_rate(replicas, args.quick)
                    report("rate_limit", results["rate_limit"])
                if "budget" in phases:
                    results["budget"] = phase_budget(replicas, pg, schema)
                    report("budget", results["budget"])
                if "redis" in phases:
                    results["redis_outage"] = phase_outage(
                        replicas, pg, schema, "Redis", redis.stop, redis.start, outage_s
                    )
                    report("redis_outage", results["redis_outage"])
                if "postgres" in phases:
                    results["postgres_outage"] = phase_outage(
                        replicas, pg, schema, "PostgreSQL", pg.stop, pg.start, outage_s
                    )
                    report("postgres_outage", results["postgres_outage"])
            finally:
                replicas.stop()
            if "kill" not in phases:
                kills = ()
            else:
                kills = (
                    ("kill_postgres", pg, False),
                    ("kill_postgres_away", pg, True),
                    ("kill_sqlite", None, False),
                )
            for name, store, cut in kills:
                results[name] = phase_kill(workdir, upstream, store, cut, rate=50.0 if args.quick else 100.0)
                report(name, results[name])
        finally:
            upstream.stop()
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return 0 if all(v.get("holds") for v in results.values() if isinstance(v, dict)) else 1


def report(name: str, result: dict[str, Any]) -> None:
    verdict = "holds" if result["holds"] else "BROKEN"
    details = ", ".join(f"{k}={v}" for k, v in result.items() if k not in ("promise", "holds"))
    print(f"{name}: {verdict}: {result['promise']}\n    {details}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
