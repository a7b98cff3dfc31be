"""`pointsman train | eval | calibrate` through the argparse registration the CLI uses."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pointsman.learning.commands import register
from pointsman.learning.datasets import load_bundled, split_by_prompt, write_jsonl


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    parser = argparse.ArgumentParser(prog="pointsman")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out = capsys.readouterr().out
    return code, json.loads(out) if "--json" in argv else out


def test_eval_reports_the_router_beside_random_best_single_and_oracle(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = run(["eval", "gsm8k", "--json"], capsys)
    assert code == 0
    (data,) = report["datasets"]
    assert data["dataset"] == "gsm8k" and data["rows"] == 261
    names = [r["name"] for r in data["references"]]
    assert names[0] == "random" and names[1].startswith("best single") and names[2] == "oracle"
    assert data["references"][0]["apgr"] == pytest.approx(0.5)
    router = data["routers"][0]
    assert router["name"] == "default"
    assert data["references"][0]["apgr"] < router["apgr"] < data["references"][2]["apgr"]
    assert {"cpt50", "cpt80", "cpt95", "aiq"} <= set(router)
    assert 0 < data["operating_point"]["strong_share"] < 1


def test_eval_by_group_and_without_a_group(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["eval", "mmlu", "--groups", "--exclude-group", "high_school_mathematics"], capsys)
    assert code == 0
    assert "mmlu without high_school_mathematics" in text
    assert "high_school_mathematics" in text and "moral_scenarios" in text


def test_calibrate_turns_a_strong_share_into_a_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run(["calibrate", "--strong-share", "0.3", "--json"], capsys)
    assert code == 0
    assert result["expected"]["strong_share"] == pytest.approx(0.3)
    assert isinstance(result["threshold"], float)


def test_calibrate_on_data_and_write_the_knob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pointsman.learning.artifact import shipped_dir

    folder = tmp_path / "router"
    shutil.copytree(shipped_dir() / "default", folder)
    code, result = run(
        [
            "calibrate",
            "--router",
            str(folder),
            "--quality",
            "0.9",
            "--data",
            "gsm8k",
            "--split",
            "train",
            "--write",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and "written" in result
    stored = json.loads((folder / "router.json").read_text())["knob"]
    assert stored["threshold"] == result["threshold"]
    assert stored["target"] == {"quality": 0.9}


def test_train_on_a_generic_jsonl_then_eval_it_with_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gsm8k = load_bundled("gsm8k")
    path = tmp_path / "mine.jsonl"
    write_jsonl(gsm8k.subset(np.arange(400)), path)
    code, trained = run(
        [
            "train",
            str(path),
            "--out",
            str(tmp_path / "r"),
            "--candidates",
            "linear(tfidf)",
            "--folds",
            "2",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    assert trained["chosen"] == ["linear(tfidf)"]
    assert trained["rows"] == len(split_by_prompt(gsm8k.prompts[:400])[0])
    code, report = run(
        ["eval", str(path), "--router", str(tmp_path / "r"), "--json", "--plot", str(tmp_path / "c.png")],
        capsys,
    )
    assert code == 0 and report["datasets"][0]["rows"] == 80
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pointsman.learning.evaluation import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit, match=r"pip install 'pointsman\[plot\]'"):
        plot([], str(tmp_path / "x.png"))


def test_missing_data_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run(["eval", "no-such-set", "--json"], capsys)
    assert code == 1
    assert "not a bundled set" in result["error"]


def test_shipped_routers_hold_their_documented_held_out_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run(["eval", "--json"], capsys)
    assert code == 0
    by_name = {d["dataset"]: d for d in report["datasets"]}
    assert by_name["mmlu"]["routers"][0]["apgr"] == pytest.approx(0.693, abs=0.002)
    assert by_name["gsm8k"]["routers"][0]["apgr"] == pytest.approx(0.624, abs=0.002)
    nine = by_name["llmrouter"]["routers"][0]
    assert nine["cost_to_95"] == pytest.approx(0.24, abs=0.01)
    assert nine["cost_to_100"] == pytest.approx(0.49, abs=0.01)
    assert nine["quality_at_best_cost"] > by_name["llmrouter"]["references"][1]["quality_at_best_cost"]


@pytest.mark.slow
def test_the_documented_training_command_rebuilds_the_shipped_router(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pointsman.learning.artifact import RouterArtifact

    out = tmp_path / "default"
    argv = ["train", "mmlu", "gsm8k", "--routes", "--drop-group", "high_school_mathematics"]
    code, _ = run([*argv, "--out", str(out), "--json"], capsys)
    assert code == 0
    shipped, rebuilt = RouterArtifact.load("default"), RouterArtifact.load(out)
    prompts = load_bundled("gsm8k").prompts[:100] + load_bundled("mmlu").prompts[:100]
    assert np.allclose(shipped.predict(prompts), rebuilt.predict(prompts), atol=1e-6)
    assert shipped.knob["routes"].keys() == rebuilt.knob["routes"].keys()
