"""Config files: a good one loads with its values and defaults; a bad one gives one clear line per
problem naming the key path and the reason, from `load_config` and from `pointsman config check`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pointsman.config import ConfigError, load_config

UNSET = "POINTSMAN_TEST_UNSET_VAR"
SET = "POINTSMAN_TEST_SET_VAR"


def _pointsman_command() -> list[str]:
    """The installed console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("pointsman")
    if script.exists():
        return [str(script)]
    found = shutil.which("pointsman")
    return [found] if found else [sys.executable, "-m", "pointsman"]


POINTSMAN = _pointsman_command()

TWO_DEPLOYMENTS = """\
deployments:
  - {name: a, provider: openai, model: m-a, api_base: "http://127.0.0.1:9/a/v1"}
  - {name: b, provider: openai, model: m-b, api_base: "http://127.0.0.1:9/b/v1"}
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.setenv(SET, "sk-from-env")


def write(tmp_path: Path, *parts: str) -> Path:
    """A config file made of the given YAML parts, each dedented."""
    path = tmp_path / "pointsman.yaml"
    path.write_text("".join(textwrap.dedent(part) for part in parts), encoding="utf-8")
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    """`pointsman config check PATH`, run as a user would, with the test's environment."""
    return subprocess.run(
        [*POINTSMAN, "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def assert_rejected(path: Path, expected: list[str]) -> None:
    """The library and the CLI both report exactly these lines, and the CLI exits 1."""
    assert problems(path) == expected
    result = check(path)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [f"{path}: {line}" for line in expected]


# --- A good file ------------------------------------------------------------------------------


def test_good_config_round_trips_every_deployment_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        deployments:
          - name: gpt
            provider: openai
            model: gpt-4o
            api_base: https://api.openai.com/v1
            api_key: ${{{SET}}}
            price: {{input: 2.5, output: 10}}
            context_window: 128000
            max_output_tokens: 4096
            capabilities: {{vision: true, tools: false, json_output: false}}
            region: eu
            tags: [premium, reasoning]
            timeouts: {{connect: 1.5, first_byte: 8, inter_chunk: 4, total: 90}}
            max_retries: 2
            rpm: 500
            tpm: 150000
          - name: claude
            provider: anthropic
            model: claude-sonnet
            api_base: https://api.anthropic.com
            price: {{input: 3, output: 15}}
        models:
          smart:
            strategy: ordered
            deployments: [claude]
            fallbacks: [gpt]
        """,
    )

    config = load_config(path)

    gpt = config.deployment("gpt")
    assert (gpt.provider, gpt.model, gpt.api_base) == ("openai", "gpt-4o", "https://api.openai.com/v1")
    assert gpt.api_key == "sk-from-env"
    assert (gpt.price.input, gpt.price.output) == (2.5, 10.0)
    assert (gpt.context_window, gpt.max_output_tokens) == (128000, 4096)
    assert (gpt.capabilities.vision, gpt.capabilities.tools, gpt.capabilities.json_output) == (
        True,
        False,
        False,
    )
    assert gpt.region == "eu"
    assert gpt.tags == ("premium", "reasoning")
    assert (gpt.timeouts.connect, gpt.timeouts.first_byte, gpt.timeouts.inter_chunk, gpt.timeouts.total) == (
        1.5,
        8.0,
        4.0,
        90.0,
    )
    assert gpt.max_retries == 2
    assert (gpt.rpm, gpt.tpm) == (500, 150000)
    assert config.models["smart"].deployments == ("claude",)
    assert config.models["smart"].fallbacks == ("gpt",)
    result = check(path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        f"{path}: ok (2 deployments, 1 virtual models)",
        f"{path}: auth: the API is open to anyone who can reach it "
        "(set server.api_keys or $POINTSMAN_MASTER_KEY)",
    ]


def test_defaults_fill_everything_a_minimal_config_leaves_out(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TWO_DEPLOYMENTS, "models:\n  auto:\n    deployments: [a]\n"))

    a = config.deployment("a")
    assert a.api_key is None
    assert (a.price.input, a.price.output) == (0.0, 0.0)
    assert a.context_window == 128_000
    assert a.max_output_tokens is None
    assert (a.capabilities.vision, a.capabilities.tools, a.capabilities.json_output) == (
        False,
        True,
        True,
    )
    assert (a.region, a.tags) == (None, ())
    assert (a.timeouts.connect, a.timeouts.first_byte, a.timeouts.inter_chunk, a.timeouts.total) == (
        5.0,
        30.0,
        30.0,
        600.0,
    )
    assert (a.max_retries, a.rpm, a.tpm) == (0, None, None)
    assert config.models["auto"].strategy == "ordered"
    assert config.models["auto"].fallbacks == ()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 4000)
    assert config.server.max_body_bytes == 4 * 1024 * 1024
    assert config.router.max_attempts == 5
    assert config.store.enabled


def test_env_var_default_is_used_when_the_var_is_unset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        deployments:
          - name: a
            provider: openai
            model: m
            api_base: ${{{UNSET}:-http://127.0.0.1:8000}}/v1
            api_key: ${{{UNSET}:-sk-fallback}}
            rpm: ${{{UNSET}:-60}}
        """,
    )

    a = load_config(path).deployment("a")

    assert (a.api_base, a.api_key, a.rpm) == ("http://127.0.0.1:8000/v1", "sk-fallback", 60)
    assert check(path).returncode == 0


def test_a_dict_config_is_validated_like_a_file() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            {
                "deployments": [
                    {"name": "a", "provider": "openai", "model": "m", "api_base": "http://x"},
                    {"name": "b", "provider": "openai", "api_base": "http://x"},
                ]
            }
        )

    assert caught.value.problems == ["deployments[1].model: missing required key"]


# --- One kind of problem per test -------------------------------------------------------------


def test_missing_key_names_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_DEPLOYMENTS.replace(" model: m-b,", ""))

    assert_rejected(path, ["deployments[1].model: missing required key"])


def test_a_lone_broken_deployment_gives_only_its_own_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        deployments:
          - name: a
            provider: openai
            api_base: http://127.0.0.1:9/v1
        """,
    )

    assert_rejected(path, ["deployments[0].model: missing required key"])


def test_wrong_type_names_the_expected_type_and_the_value(tmp_path: Path) -> None:
    path = write(
        tmp_path, TWO_DEPLOYMENTS.replace("m-b,", "m-b, price: {input: cheap, output: 1}, tags: premium,")
    )

    assert_rejected(
        path,
        [
            "deployments[1].price.input: wrong type: expected a number, got 'cheap'",
            "deployments[1].tags: wrong type: expected a list, got 'premium'",
        ],
    )


def test_unknown_provider_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_DEPLOYMENTS.replace("openai, model: m-b", "cohere, model: m-b"))

    assert_rejected(
        path,
        [
            "deployments[1].provider: unknown provider 'cohere' "
            "(expected one of: openai, anthropic, gemini, bedrock)",
        ],
    )


def test_unset_env_var_names_the_var_and_where_it_is_used(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        deployments:
          - name: a
            provider: openai
            model: m
            api_base: http://127.0.0.1:9/v1
            api_key: ${{{UNSET}}}
        """,
    )

    assert_rejected(path, [f"deployments[0].api_key: environment variable {UNSET} is not set"])


def test_unknown_key_is_reported_not_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_DEPLOYMENTS.replace("m-a,", "m-a, contxt_window: 32000,"))

    assert_rejected(path, ["deployments[0].contxt_window: unknown key"])


def test_duplicate_deployment_names_point_at_the_second(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_DEPLOYMENTS.replace("name: b", "name: a"))

    assert_rejected(path, ["deployments[1].name: duplicate deployment name 'a'"])


def test_virtual_model_naming_unknown_deployments_and_fallbacks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_DEPLOYMENTS,
        """\
        models:
          auto:
            deployments: [a, ghost]
            fallbacks: [phantom]
        """,
    )

    assert_rejected(
        path,
        [
            "models.auto.deployments[1]: unknown deployment 'ghost' (known: a, b)",
            "models.auto.fallbacks[0]: unknown deployment 'phantom' (known: a, b)",
        ],
    )


def test_condition_using_an_unknown_deployment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_DEPLOYMENTS,
        """\
        models:
          auto:
            strategy: conditions
            deployments: [a]
            options:
              conditions:
                - {name: code, when: {keywords: [def]}, use: [b, coder]}
        """,
    )

    assert_rejected(
        path, ["models.auto.options.conditions[0].use[1]: unknown deployment 'coder' (known: a, b)"]
    )


def test_weight_for_an_unknown_deployment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_DEPLOYMENTS,
        """\
        models:
          fast:
            strategy: weighted
            deployments: [a, b]
            options: {weights: {a: 3, mini: 1}}
        """,
    )

    assert_rejected(path, ["models.fast.options.weights.mini: unknown deployment 'mini' (known: a, b)"])


def test_non_positive_weight(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_DEPLOYMENTS,
        """\
        models:
          fast:
            strategy: weighted
            deployments: [a, b]
            options: {weights: {a: 3, b: 0}}
        """,
    )

    assert_rejected(path, ["models.fast.options.weights.b: weight must be positive, got 0.0"])


def test_unknown_strategy_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path, TWO_DEPLOYMENTS, "models:\n  smart:\n    strategy: smartest\n    deployments: [a]\n"
    )
    prefix = "models.smart.strategy: unknown strategy 'smartest' (expected one of: "
    result = check(path)

    assert result.returncode == 1
    # Strategies registered by other code may join the list; the built-in ones must be in it.
    for lines in (problems(path), [line.removeprefix(f"{path}: ") for line in result.stdout.splitlines()]):
        (line,) = lines
        assert line.startswith(prefix) and line.endswith(")")
        assert {"ordered", "weighted", "conditions"} <= set(line[len(prefix) : -1].split(", "))


def test_invalid_regex_in_a_condition_quotes_the_regex_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_DEPLOYMENTS,
        """\
        models:
          auto:
            strategy: conditions
            deployments: [a]
            options:
              conditions:
                - {name: code, when: {regex: "(def|class"}, use: [b]}
        """,
    )

    assert_rejected(
        path,
        [
            "models.auto.options.conditions[0].when.regex: invalid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ],
    )


def test_virtual_model_without_deployments(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_DEPLOYMENTS, "models:\n  auto: {}\n")

    assert_rejected(path, ["models.auto.deployments: a virtual model needs at least one deployment"])


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        deployments:
          - name: a
            provider: openai
            model: gpt-4o: mini
        """,
    )

    assert_rejected(path, ["(yaml): line 4, column 18: mapping values are not allowed here"])


def test_empty_file_asks_for_deployments(tmp_path: Path) -> None:
    assert_rejected(write(tmp_path, ""), ["deployments: missing required key"])


def test_top_level_list_is_not_a_config(tmp_path: Path) -> None:
    assert_rejected(write(tmp_path, "- a\n- b\n"), ["(top level): expected a mapping, got list"])


def test_missing_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    assert_rejected(path, [f"(file): cannot read {path}: No such file or directory"])


# --- Several problems at once -----------------------------------------------------------------


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        deployments:
          - name: a
            provider: openai
            api_base: http://127.0.0.1:9/v1
            price: {{input: cheap}}
            contxt_window: 32000
          - name: b
            provider: cohere
            model: m
            api_base: http://127.0.0.1:9/v1
            api_key: ${{{UNSET}}}
          - {{name: c, provider: openai, model: m, api_base: "http://127.0.0.1:9/v1"}}
        """,
    )
    expected = [
        "deployments[0].model: missing required key",
        "deployments[0].price.input: wrong type: expected a number, got 'cheap'",
        "deployments[0].contxt_window: unknown key",
        "deployments[1].provider: unknown provider 'cohere' "
        "(expected one of: openai, anthropic, gemini, bedrock)",
        f"deployments[1].api_key: environment variable {UNSET} is not set",
    ]

    # Order is not part of the contract; completeness is.
    assert sorted(problems(path)) == sorted(expected)
    result = check(path)
    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == sorted(f"{path}: {line}" for line in expected)


def test_reference_and_option_problems_are_reported_with_schema_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        deployments:
          - {name: a, provider: openai, model: m, api_base: "http://127.0.0.1:9/v1", contxt_window: 1}
          - {name: b, provider: openai, model: m, api_base: "http://127.0.0.1:9/v1"}
        models:
          auto:
            strategy: conditions
            deployments: [b]
            fallbacks: [phantom]
            options:
              conditions:
                - {name: code, when: {keywords: [def]}, use: [coder]}
        """,
    )

    assert sorted(problems(path)) == sorted(
        [
            "deployments[0].contxt_window: unknown key",
            "models.auto.fallbacks[0]: unknown deployment 'phantom' (known: a, b)",
            "models.auto.options.conditions[0].use[0]: unknown deployment 'coder' (known: a, b)",
        ]
    )


def test_a_key_with_a_schema_error_gets_that_error_alone(tmp_path: Path) -> None:
    # The route's deployments have the wrong type: no second line claims it has none.
    path = write(
        tmp_path,
        """\
        deployments:
          - {name: b, provider: openai, model: m, api_base: "http://127.0.0.1:9/v1", price: {input: cheap}}
        models:
          auto: {strategy: ordered, deployments: b, fallbacks: [phantom]}
        """,
    )

    assert sorted(problems(path)) == sorted(
        [
            "deployments[0].price.input: wrong type: expected a number, got 'cheap'",
            "models.auto.deployments: wrong type: expected a list, got 'b'",
            "models.auto.fallbacks[0]: unknown deployment 'phantom' (known: b)",
        ]
    )


def test_a_missing_required_key_reports_the_schema_alone(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        deployments:
          - {name: b, provider: openai, api_base: "http://127.0.0.1:9/v1"}
        models:
          auto: {strategy: ordered, deployments: [b], fallbacks: [phantom]}
        """,
    )

    assert problems(path) == ["deployments[0].model: missing required key"]
