"""Benchmarks: routing decision latency, proxy overhead, soak, and a side-by-side with LiteLLM.

Each script is one command, run from the repository root (see docs/performance.md):

    python -m bench.strategy_latency       # (a) decision latency per strategy, in process
    python -m bench.proxy_overhead         # (b) added latency, saturation, streaming TTFB
    python -m bench.soak --minutes 30      # (c) steady load with the proxy's RSS sampled
    python -m bench.litellm_compare        # (d) the same measurements against LiteLLM's proxy
"""
