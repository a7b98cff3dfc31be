"""Prices from the maintained catalogue (genai-prices) when a deployment's config has no `price:`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pointsman.cli import main
from pointsman.config import load_config, unpriced_deployments
from pointsman.prices import catalogue_price


@pytest.mark.parametrize(
    ("provider", "model", "api_base", "expected"),
    [
        ("openai", "gpt-4o-mini", "https://api.openai.com/v1", (0.15, 0.60)),
        ("anthropic", "claude-3-5-haiku-latest", "https://api.anthropic.com", (0.80, 4.00)),
        ("gemini", "gemini-2.5-flash", "https://generativelanguage.googleapis.com", (0.30, 2.50)),
        ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0", "", (0.25, 1.25)),
        # an OpenAI-compatible base the catalogue recognises selects that provider's prices
        ("openai", "llama-3.1-8b-instant", "https://api.groq.com/openai/v1", (0.05, 0.08)),
        # the base price, not the dearer long-context tier past 200k tokens
        ("anthropic", "claude-sonnet-4-5", "https://api.anthropic.com", (3.0, 15.0)),
    ],
)
def test_known_models_are_priced_from_the_catalogue(provider, model, api_base, expected):
    assert catalogue_price(provider, model, api_base) == pytest.approx(expected)


def test_an_unknown_model_has_no_catalogue_price():
    assert catalogue_price("openai", "my-company-finetune-v3", "http://10.0.0.7:8000/v1") is None


def deployments(*extra):
    return {
        "deployments": [
            {"name": "flash", "provider": "gemini", "model": "gemini-2.5-flash", "api_key": "k"},
            {
                "name": "pinned",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "api_base": "https://api.openai.com/v1",
                "price": {"input": 0.1, "output": 0.2},
            },
            *extra,
        ]
    }


def test_config_price_wins_and_a_missing_one_comes_from_the_catalogue():
    config = load_config(deployments())
    flash, pinned = config.deployments
    assert (flash.price.input, flash.price.output, flash.price_source) == (0.30, 2.50, "catalogue")
    assert (pinned.price.input, pinned.price.output, pinned.price_source) == (0.1, 0.2, "config")
    assert flash.cost(1_000_000, 1_000_000) == pytest.approx(2.80)


def test_an_unknown_price_counts_as_free_and_is_listed_as_unpriced():
    local = {"name": "local", "provider": "openai", "model": "my-finetune", "api_base": "http://127.0.0.1:9/v1"}
    config = load_config(deployments(local))
    assert config.deployment("local").price_source == "unknown"
    assert config.deployment("local").cost(1000, 1000) == 0.0
    assert unpriced_deployments(config) == ["local"]


def test_config_check_and_models_say_which_prices_are_unknown(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(
        "deployments:\n"
        "  - {name: flash, provider: gemini, model: gemini-2.5-flash, api_key: k}\n"
        "  - {name: local, provider: openai, model: my-finetune, api_base: 'http://127.0.0.1:9/v1'}\n"
        "  - {name: pinned, provider: openai, model: gpt-4o, api_base: 'http://127.0.0.1:9/v1',"
        " price: {input: 1, output: 2}}\n"
    )
    assert main(["config", "check", str(path), "--prices"]) == 0
    out = capsys.readouterr().out
    assert "warning: no known price for deployment(s) local" in out
    assert "catalogue" in out and "unknown (counted as free)" in out
    assert main(["models", "--config", str(path), "--json"]) == 0
    rows = {r["deployment"]: r for r in json.loads(capsys.readouterr().out)["deployments"]}
    assert rows["flash"]["source"] == "catalogue" and rows["flash"]["output_per_mtok"] == 2.5
    assert rows["local"]["source"] == "unknown"
    assert rows["pinned"]["source"] == "config" and rows["pinned"]["input_per_mtok"] == 1


def test_catalogue_lookups_never_touch_the_network():
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise AssertionError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from pointsman.prices import catalogue_price\n"
        "print(catalogue_price('openai', 'gpt-4o', 'https://api.openai.com/v1'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2.5, 10.0)"


def test_serve_warns_at_start_up_about_deployments_without_a_price(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "deployments:\n"
        "  - {name: local, provider: openai, model: my-finetune, api_base: 'http://127.0.0.1:9/v1'}\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "pointsman", "serve", "--config", str(path), "--port", "0",
         "--db", str(tmp_path / "records.db")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = []
        assert server.stderr is not None
        for line in server.stderr:
            lines.append(line)
            if "serving on" in line:
                break
    finally:
        server.terminate()
        server.wait(10)
    assert any("no known price for deployment(s) local" in line for line in lines), lines
