"""bench/learned_eval.py keeps working: a smoke run on GSM8K (about 1,000 training prompts, a
few learners) reports the router, the baseline, their paired intervals and every preset's
promise against what it delivered. Shape only, never a timing or a target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_learned_eval_reports_router_baseline_and_presets(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.learned_eval", "--datasets", "gsm8k", "--bootstrap", "20", "--quiet"]
        + ["--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(out.read_text())["results"]
    assert result["dataset"] == "gsm8k" and result["metric"] == "apgr"
    assert 0.0 < result["ours"] < 1.5 and 0.0 < result["baseline"] < 1.5
    low, high = result["difference_interval_90"]
    assert low <= high
    assert set(result["presets"]) >= {"balanced", "economy"}
    for preset in result["presets"].values():
        assert preset["met"] == (
            preset["delivered_quality_ratio"] >= preset["promised_quality_ratio"] - 1e-12
        )
    assert "gsm8k: apgr" in done.stdout
