"""Run the fake upstream in the foreground: `python -m pointsman.testing --port 9000`."""

from __future__ import annotations

import argparse
import asyncio

from pointsman.testing.upstream import FakeUpstream


async def _serve(upstream: FakeUpstream) -> None:
    await upstream.astart()
    print(f"fake upstream listening on {upstream.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await upstream.astop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pointsman.testing",
        description="Serve simulated OpenAI/Anthropic deployments at {url}/{name}/v1/...",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-requests",
        type=int,
        default=0,
        help="requests each deployment remembers (default 0: nobody can ask a foreground server)",
    )
    args = parser.parse_args(argv)
    upstream = FakeUpstream(args.host, args.port, args.seed, keep_requests=args.keep_requests)
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(_serve(upstream))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
