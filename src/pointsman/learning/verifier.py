"""The learned verifier: predicts whether a cheap model's answer is right, from the prompt and
the answer itself, so a cascade can escalate exactly the answers that look wrong.

Serving is numpy only: `answer_features` turns (prompt, answer, optional token logprobs,
optional second cheap answer) into a fixed vector of cheap features (final answer present or
not, its form, the answer's length, hedging, refusals, format and arithmetic checks, the rule
judges' verdicts, logprob statistics, agreement with a second opinion); a `VerifierArtifact`
(JSON + .npz, no pickle) maps it to P(answer right) and holds an escalation threshold
calibrated on out-of-fold predictions. Training (`train_verifier`) needs scikit-learn.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.answers import REFUSAL_PATTERNS, arithmetic_errors
from pointsman.learning.datasets import split_by_prompt
from pointsman.learning.encoders import TfidfEncoder, build_encoder
from pointsman.learning.logs import LogsError, open_records, user_text
from pointsman.learning.predictors import (
    ArtifactError,
    EnsemblePredictor,
    Features,
    Predictor,
    load_predictor,
)
from pointsman.store import parse_duration

Progress = Callable[[str], None]
FORMAT = "pointsman-verifier/1"

# ----------------------------------------------------------------------------- features

# Each pattern starts with a zero-width check of its possible first characters: the same
# matches, but most positions fail at once (a 1k-token answer is scanned several times).
_NUMBER = re.compile(r"(?=[-$\d])(?<![\w.])-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_FINAL_MARKERS = (
    re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"\\boxed\{\s*\$?(-?[\d,]*\.?\d+)"),
    re.compile(
        r"(?=[fta])(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.I
    ),
)
_RESULT = re.compile(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")
_HEDGES = re.compile(
    r"(?=[harwmnicdulpe])\b(?:however|assum\w*|approximately|roughly|about|round(?:ed|ing)?|actually|wait|mistake|"
    r"re-?evaluate|reconsider|not possible|impossible|cannot be|can't be|doesn't make sense|"
    r"does not make sense|unclear|ambiguous|likely|probably|perhaps|maybe|estimate)\b",
    re.I,
)
_CORRECTION = re.compile(
    r"(?=[ciplos])\b(?:correct(?:ion|ed)?|instead|let me|let's recalculate|oops|sorry)\b", re.I
)
_REFUSAL = re.compile("(?=[iaun])(?:" + "|".join(REFUSAL_PATTERNS) + ")", re.I)
FEATURE_NAMES = (
    "answer_chars_log",
    "answer_lines_log",
    "prompt_chars_log",
    "answer_to_prompt_log_ratio",
    "final_marker",
    "final_found",
    "final_integer",
    "final_negative",
    "final_magnitude_log",
    "final_decimals",
    "final_in_prompt",
    "final_is_last_result",
    "final_mentions",
    "final_markers_count",
    "final_candidates_disagree",
    "tail_chars_log",
    "calculations_log",
    "arithmetic_error",
    "hedges",
    "corrections",
    "refusal",
    "rules_rejects",
    "math_rules_rejects",
    "cut_off",
    "empty",
    "prompt_numbers_log",
    "prompt_numbers_used",
    "answer_numbers_log",
    "new_numbers_share",
    "question_marks",
    "json_requested",
    "json_valid",
    "final_to_prompt_max_log",
    "final_over_prompt_sum",
    "final_fraction_of_integers",
    "arithmetic_errors_log",
    "has_logprobs",
    "logprob_mean",
    "logprob_min",
    "logprob_low_share",
    "logprob_final_mean",
    "has_second_opinion",
    "second_opinion_agrees",
)


def _value(text: str) -> float | None:
    try:
        value = float(text)  # most numbers are plain
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    text = text.replace(",", "").replace("$", "").strip()
    try:
        if "/" in text:
            top, bottom = text.split("/", 1)
            value = float(top) / float(bottom)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        return None
    # A number too long for a float is no answer to compare (and would poison the features).
    return value if math.isfinite(value) else None


def _numbers(text: str) -> list[float]:
    out = []
    for match in _NUMBER.findall(text):
        value = _value(match)
        if value is not None:
            out.append(value)
    return out


def final_answer(text: str) -> tuple[float | None, bool, int]:
    """The stated final number: (value, whether a final-answer marker stated it, how many
    markers there were); without a marker, the last number in the text."""
    markers = _markers(text)
    if markers:
        return _value(markers[-1][1]), True, len(markers)
    numbers = _numbers(text)
    return (numbers[-1] if numbers else None), False, 0


def _markers(text: str) -> list[tuple[int, str]]:
    # (end, stated number) of every final-answer marker, pattern by pattern: the last entry
    # is the final answer (a "####" line loses to a later pattern's statement).
    return [(m.end(), m.group(1)) for pattern in _FINAL_MARKERS for m in pattern.finditer(text)]


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a))


def _log_ratio(value: float | None, reference: float) -> float:
    if value is None:
        return 0.0
    return math.log1p(abs(value)) - math.log1p(reference)


# Long texts are read through a window of their last characters (where the final answer and
# the last steps are): the features stay cheap on 1k-token answers, and no training answer
# of the shipped verifier is longer.
WINDOW_CHARS = 1500
_MATH_EXTRA = re.compile(
    r"(?=[har])(?:\bhowever\b|\bassum(?:e|ing)\b|\bapproximately\b|\bround(?:ed|ing)?\b)", re.I
)
_MATH_REQUIRED = re.compile(r"(?:####|answer is|=)\s*\$?-?\d[\d,]*(?:\.\d+)?", re.I)


def answer_features(
    prompt: str,
    answer: str,
    *,
    finish_reason: str | None = None,
    logprobs: Sequence[float] | None = None,
    second: str | None = None,
    json_requested: bool = False,
) -> np.ndarray:
    """The verifier's hand-made features of one answer (in `FEATURE_NAMES` order).

    `logprobs` are the answer's token log-probabilities when the upstream returned them;
    `second` is another cheap answer to the same prompt (a second sample or deployment)."""
    whole = answer.strip()
    text = whole[-WINDOW_CHARS:]
    prompt_chars = len(prompt)
    prompt = prompt[-WINDOW_CHARS:]
    markers = _markers(text)
    answer_numbers = _numbers(text)
    if markers:
        final, marked, marker_count = _value(markers[-1][1]), True, len(markers)
    else:
        final, marked, marker_count = (answer_numbers[-1] if answer_numbers else None), False, 0
    prompt_numbers = _numbers(prompt)
    results = [v for v in (_value(r) for r in _RESULT.findall(text)) if v is not None]
    calculations = len(results)
    last_marker = max((end for end, _ in markers), default=len(text))
    marker_values = {round(v, 6) for v in (_value(raw) for _, raw in markers) if v is not None}
    p_arr = np.asarray(prompt_numbers, dtype=np.float64)
    a_arr = np.asarray(answer_numbers, dtype=np.float64)
    prompt_set = set(round(v, 6) for v in prompt_numbers)
    answer_new = sum(1 for v in answer_numbers if round(v, 6) not in prompt_set)
    used = sum(
        1 for v in prompt_set if len(a_arr) and bool((np.abs(a_arr - v) <= 1e-6 * max(1.0, abs(v))).any())
    )
    errors = arithmetic_errors(text)
    refusal = _REFUSAL.search(text) is not None
    cut_off = finish_reason == "length"
    generic_rejects = not text or cut_off or refusal
    math_rejects = (
        generic_rejects
        or _MATH_EXTRA.search(text) is not None
        or _MATH_REQUIRED.search(text) is None
        or errors > 0
    )
    json_valid = 0.0
    if json_requested:
        try:
            json.loads(whole)
            json_valid = 1.0
        except ValueError:
            json_valid = 0.0
    lp = _finite(logprobs)
    second_final = final_answer(second[-WINDOW_CHARS:])[0] if second else None
    has_final = final is not None
    f = final if final is not None else 0.0
    row = [
        math.log1p(len(whole)),
        math.log1p(whole.count("\n") + 1 if whole else 0),
        math.log1p(prompt_chars),
        math.log1p(len(whole)) - math.log1p(prompt_chars),
        float(marked),
        float(has_final),
        float(has_final and _same(f, round(f))),
        float(has_final and f < 0),
        math.log1p(abs(f)) if has_final else 0.0,
        float(has_final and not _same(f, round(f, 2))),
        float(has_final and len(p_arr) > 0 and bool((np.abs(f - p_arr) <= 1e-6 * max(1.0, abs(f))).any())),
        float(has_final and bool(results) and _same(f, results[-1])),
        math.log1p(
            int((np.abs(a_arr - f) <= 1e-6 * np.maximum(1.0, np.abs(a_arr))).sum()) if has_final else 0
        ),
        float(marker_count),
        float(len(marker_values) > 1),
        math.log1p(len(text) - last_marker) if marked else 0.0,
        math.log1p(calculations),
        float(errors > 0),
        float(len(_HEDGES.findall(text))),
        float(len(_CORRECTION.findall(text))),
        float(refusal),
        float(generic_rejects),
        float(math_rejects),
        float(cut_off),
        float(not whole),
        math.log1p(len(prompt_numbers)),
        used / len(prompt_set) if prompt_set else 1.0,
        math.log1p(len(answer_numbers)),
        answer_new / len(answer_numbers) if answer_numbers else 0.0,
        float(prompt.count("?")),
        float(json_requested),
        json_valid,
        _log_ratio(final, float(np.abs(p_arr).max()) if len(p_arr) else 0.0),
        float(has_final and abs(f) > float(np.abs(p_arr).sum()) + 1e-9),
        float(has_final and not _same(f, round(f)) and all(_same(v, round(v)) for v in prompt_numbers)),
        math.log1p(errors),
        float(len(lp) > 0),
        float(lp.mean()) if len(lp) else 0.0,
        float(lp.min()) if len(lp) else 0.0,
        float((lp < -2.0).mean()) if len(lp) else 0.0,
        float(lp[-8:].mean()) if len(lp) else 0.0,
        float(second is not None),
        float(second_final is not None and has_final and _same(second_final, f)),
    ]
    return np.asarray(row, dtype=np.float64)


def _finite(logprobs: Sequence[float] | None) -> np.ndarray:
    if not logprobs:
        return np.zeros(0)
    try:
        values = np.asarray(logprobs, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.asarray([v for v in logprobs if isinstance(v, (int, float))], dtype=np.float64)
    finite: np.ndarray = values[np.isfinite(values)]
    return finite


# ----------------------------------------------------------------------------- examples


@dataclass
class VerifierExample:
    """One cheap answer and whether it was right (0..1); `strong_right` is how the stronger
    model did on the same prompt, where known (it lets a target quality be calibrated)."""

    prompt: str
    answer: str
    right: float
    strong_right: float | None = None
    finish_reason: str | None = None
    logprobs: list[float] | None = None
    second: str | None = None
    # Cost of the cheap and the strong call, where known (any one currency).
    cheap_cost: float | None = None
    strong_cost: float | None = None


# RouteLLM's GSM8K file: the cheap and the strong model, and their public list prices of the
# time in $ per million (input, output) tokens, to count the cheap call in the cost.
GSM8K_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GSM8K_STRONG = "gpt-4-1106-preview"
GSM8K_PRICES = {GSM8K_WEAK: (0.6, 0.6), GSM8K_STRONG: (10.0, 30.0)}
_CHARS_PER_TOKEN = 4.0


def load_gsm8k_answers(folder: str | Path) -> list[VerifierExample]:
    """RouteLLM's GSM8K outcomes with both models' answers (``gsm8k_responses.csv``), one
    example per prompt with the weak model's answer; contaminated prompts are dropped."""
    path = Path(folder)
    if path.is_dir():
        path = path / "gsm8k_responses.csv"
    if not path.exists():
        raise VerifierError(f"{path}: no such file (expected RouteLLM's gsm8k_responses.csv)")
    contaminated: set[str] = set()
    listed = path.parent / "contaminated_prompts.jsonl"
    if listed.exists():
        for line in listed.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                contaminated.add(row.get("eval_prompt") or row.get("prompt", ""))
    csv.field_size_limit(sys.maxsize)
    out = []
    needed = ["prompt", GSM8K_WEAK, GSM8K_STRONG, f"{GSM8K_WEAK}_response", f"{GSM8K_STRONG}_response"]
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in needed if c not in (reader.fieldnames or ())]
        if missing:
            raise VerifierError(
                f"{path}: missing column(s) {', '.join(missing)} (expected RouteLLM's GSM8K file)"
            )
        for row in reader:
            if row["prompt"] in contaminated:
                continue
            prompt_tokens = len(row["prompt"]) / _CHARS_PER_TOKEN
            costs = []
            for model in (GSM8K_WEAK, GSM8K_STRONG):
                price_in, price_out = GSM8K_PRICES[model]
                out_tokens = len(row[f"{model}_response"]) / _CHARS_PER_TOKEN
                costs.append((prompt_tokens * price_in + out_tokens * price_out) / 1e6)
            out.append(
                VerifierExample(
                    prompt=row["prompt"],
                    answer=row[f"{GSM8K_WEAK}_response"],
                    right=float(row[GSM8K_WEAK] == "True"),
                    strong_right=float(row[GSM8K_STRONG] == "True"),
                    cheap_cost=costs[0],
                    strong_cost=costs[1],
                )
            )
    return out


def examples_from_records(
    records: Sequence[Mapping[str, Any]], deployments: Sequence[str] | None = None
) -> tuple[list[VerifierExample], dict[str, int]]:
    """Rated records (`POST /v1/feedback`) as examples: the stored prompt, the stored answer
    and its rating. Only answers of `deployments` (the cheap ones a cascade judges; default:
    all) count; the rest are skipped and counted by reason."""
    wanted = set(deployments or ())
    skipped: dict[str, int] = {}
    out = []
    for record in records:
        feedback = record.get("feedback")
        if not feedback:
            continue
        why = None
        if record.get("status") != 200 or not record.get("deployment"):
            why = "failed request"
        elif wanted and record["deployment"] not in wanted:
            why = "answered by another deployment"
        elif not record.get("prompt") or not record.get("answer"):
            why = "no stored prompt or answer"
        if why is not None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        prompt = user_text(str(record["prompt"])) or str(record["prompt"])
        out.append(VerifierExample(prompt, str(record["answer"]), float(feedback["score"])))
    return out, skipped


# ----------------------------------------------------------------------------- the artifact


class VerifierError(ValueError):
    """A verifier that cannot be trained, read or calibrated as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class VerifierTarget:
    """What the escalation threshold should achieve, judged on out-of-fold predictions:
    escalate at most this share of answers, keep this share of the strong model's accuracy
    at the least escalation, or spend at most this share of always-strong's cost (the cheap
    call counted)."""

    escalation_share: float | None = None
    quality: float | None = None
    cost_share: float | None = None


@dataclass
class VerifierArtifact:
    """A trained verifier: P(answer right) from `answer_features` (block ``answer``) and,
    optionally, TF-IDF of prompt and answer (block ``tfidf``); escalate below `threshold`."""

    predictor: Predictor
    tfidf: TfidfEncoder | None
    threshold: float
    # Out-of-fold scores and outcomes of the training rows, to turn targets into thresholds.
    calibration: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def features(self, examples: Sequence[VerifierExample]) -> Features:
        dense = np.vstack(
            [
                answer_features(
                    e.prompt, e.answer, finish_reason=e.finish_reason, logprobs=e.logprobs, second=e.second
                )
                for e in examples
            ]
        )
        feats = Features(dense={"answer": dense})
        if self.tfidf is not None:
            feats.sparse["tfidf"] = self.tfidf.encode_sparse([_joined(e.prompt, e.answer) for e in examples])
        return feats

    def score_batch(self, examples: Sequence[VerifierExample]) -> np.ndarray:
        """P(answer right) per example."""
        out: np.ndarray = np.clip(self.predictor.predict(self.features(examples))[:, 0], 0.0, 1.0)
        return out

    @property
    def uses_logprobs(self) -> bool:
        """Whether it learned from token logprobs (most training answers had them)."""
        return bool(self.meta.get("logprobs", False))

    @property
    def second_opinion(self) -> bool:
        """Whether it was trained with a second cheap answer per prompt (and needs one)."""
        return bool(self.meta.get("second_opinion", False))

    def score(
        self,
        prompt: str,
        answer: str,
        *,
        finish_reason: str | None = None,
        logprobs: Sequence[float] | None = None,
        second: str | None = None,
        json_requested: bool = False,
    ) -> float:
        """P(answer right) for one answer (the serving path)."""
        dense = answer_features(
            prompt,
            answer,
            finish_reason=finish_reason,
            logprobs=logprobs,
            second=second,
            json_requested=json_requested,
        )
        feats = Features(dense={"answer": dense[None, :]})
        if self.tfidf is not None:
            feats.sparse["tfidf"] = self.tfidf.encode_sparse([_joined(prompt, answer)])
        return float(np.clip(self.predictor.predict(feats)[0, 0], 0.0, 1.0))

    # -- calibration --------------------------------------------------------------------------

    def threshold_for(self, target: VerifierTarget) -> float:
        """The escalation threshold that meets `target` on the out-of-fold table."""
        return threshold_for(self.calibration, target)

    def curve(self) -> list[dict[str, float]]:
        """Out-of-fold escalation curve: share escalated, accuracy, gap closed, cost share."""
        return escalation_curve(self.calibration)

    # -- storage ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``verifier.json`` and ``arrays.npz`` into the folder `path` (created)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        spec, arrays = self.predictor.export("p_")
        encoder = None
        if self.tfidf is not None:
            encoder = self.tfidf.spec()
            arrays.update({f"tfidf_{k}": v for k, v in self.tfidf.arrays().items()})
        table = {k: np.asarray(v, dtype=np.float64) for k, v in self.calibration.items() if k in _TABLE}
        arrays.update({f"cal_{k}": v for k, v in table.items()})
        doc = {
            "format": FORMAT,
            "features": list(FEATURE_NAMES),
            "threshold": self.threshold,
            "cost_ratio": self.calibration.get("cost_ratio"),
            "meta": self.meta,
            "tfidf": encoder,
            "predictor": spec,
        }
        tmp_json, tmp_npz = folder / "verifier.json.tmp", folder / "arrays.tmp.npz"
        tmp_json.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        np.savez_compressed(tmp_npz, **arrays)  # type: ignore[arg-type]
        os.replace(tmp_npz, folder / "arrays.npz")
        os.replace(tmp_json, folder / "verifier.json")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> VerifierArtifact:
        folder = resolve_verifier(path)
        try:
            doc = json.loads((folder / "verifier.json").read_text(encoding="utf-8"))
            with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise VerifierError(f"{folder}: cannot read the verifier ({exc})") from None
        if doc.get("format") != FORMAT:
            raise VerifierError(
                f"{folder}/verifier.json: not a pointsman verifier (format {doc.get('format')!r})"
            )
        if list(doc.get("features", ())) != list(FEATURE_NAMES):
            raise VerifierError(
                f"{folder}: trained on other features than this pointsman computes; retrain it"
            )
        tfidf = None
        if doc.get("tfidf"):
            own = {k[len("tfidf_") :]: v for k, v in arrays.items() if k.startswith("tfidf_")}
            built = build_encoder(doc["tfidf"], own)
            assert isinstance(built, TfidfEncoder)
            tfidf = built
        try:
            predictor = load_predictor(doc["predictor"], arrays)
        except (KeyError, ArtifactError) as exc:
            raise VerifierError(f"{folder}: cannot read the verifier's model ({exc})") from None
        calibration: dict[str, Any] = {k[4:]: arrays[k] for k in arrays if k.startswith("cal_")}
        calibration["cost_ratio"] = doc.get("cost_ratio")
        return cls(predictor, tfidf, float(doc["threshold"]), calibration, dict(doc.get("meta", {})))


_TABLE = ("scores", "right", "strong_right")


def shipped_verifiers_dir() -> Path:
    return Path(str(resources.files("pointsman") / "data" / "verifiers"))


def resolve_verifier(path: str | Path) -> Path:
    """A shipped verifier by name (``gsm8k``) or a folder holding ``verifier.json``."""
    text = str(path)
    if "/" not in text and "\\" not in text and not text.startswith("."):
        shipped = shipped_verifiers_dir() / text
        if (shipped / "verifier.json").exists():
            return shipped
    folder = Path(text).expanduser()
    if folder.is_file() and folder.name == "verifier.json":
        folder = folder.parent
    if not (folder / "verifier.json").exists():
        folder_shipped = shipped_verifiers_dir()
        names = sorted(p.name for p in folder_shipped.iterdir()) if folder_shipped.is_dir() else []
        raise VerifierError(
            f"{text}: not a verifier folder (no verifier.json) nor a shipped verifier "
            f"({', '.join(names) or 'none'})"
        )
    return folder


_LOADED: dict[tuple[str, int], VerifierArtifact] = {}


def load_verifier(path: str | Path) -> VerifierArtifact:
    """Load once per process (cached by folder and modification time)."""
    folder = resolve_verifier(path)
    key = (str(folder.resolve()), (folder / "verifier.json").stat().st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = VerifierArtifact.load(folder)
    return _LOADED[key]


def _joined(prompt: str, answer: str) -> str:
    # TF-IDF reads the same windows as the hand-made features.
    return f"{prompt[-WINDOW_CHARS:]}\n{answer[-WINDOW_CHARS:]}"


# ----------------------------------------------------------------------------- calibration


def escalation_curve(
    table: Mapping[str, Any], shares: Sequence[float] | None = None
) -> list[dict[str, float]]:
    """For each escalation share: the accuracy of the cascade (strong outcomes for escalated
    answers, where known), the share of the weak-strong gap closed, and the cost share of
    always-strong with the cheap call counted."""
    scores = np.asarray(table["scores"], dtype=np.float64)
    right = np.asarray(table["right"], dtype=np.float64)
    strong = table.get("strong_right")
    strong = None if strong is None or len(strong) == 0 else np.asarray(strong, dtype=np.float64)
    ratio = table.get("cost_ratio")
    order = np.argsort(scores, kind="stable")
    n = len(scores)
    out = []
    for share in shares if shares is not None else np.linspace(0, 1, 21):
        k = int(math.floor(share * n + 1e-9))
        escalate = np.zeros(n, dtype=bool)
        escalate[order[:k]] = True
        point: dict[str, float] = {
            "escalation_share": k / n if n else 0.0,
            "threshold": float(scores[order[k]]) if k < n else math.inf,
            "wrong_caught": float((escalate & (right < 0.5)).sum() / max(1, (right < 0.5).sum())),
        }
        if strong is not None:
            accuracy = float(np.where(escalate, strong, right).mean())
            gap = float(strong.mean() - right.mean())
            point["accuracy"] = accuracy
            point["gap_closed"] = (accuracy - float(right.mean())) / gap if gap > 0 else 0.0
        if ratio is not None:
            point["cost_share"] = float(ratio) + k / n
        out.append(point)
    return out


def threshold_for(table: Mapping[str, Any], target: VerifierTarget) -> float:
    """Escalate answers scoring below the returned value to meet `target` on the table."""
    scores = np.sort(np.asarray(table.get("scores", ()), dtype=np.float64))
    n = len(scores)
    if n == 0:
        raise VerifierError("the verifier has no calibration table: give a threshold instead of a target")

    def at(k: int) -> float:
        # Escalating the k lowest-scoring answers: the threshold is the (k+1)-th score.
        return float(scores[k]) if k < n else math.inf

    if target.escalation_share is not None:
        return at(int(math.floor(target.escalation_share * n + 1e-9)))
    if target.cost_share is not None:
        ratio = table.get("cost_ratio")
        if ratio is None:
            raise VerifierError(
                "a cost_share target needs the cheap/strong cost ratio, which this verifier lacks"
            )
        share = max(0.0, target.cost_share - float(ratio))
        return at(int(math.floor(share * n + 1e-9)))
    if target.quality is not None:
        strong = table.get("strong_right")
        if strong is None or len(strong) == 0:
            raise VerifierError(
                "a quality target needs the strong model's outcomes on the training prompts, which this "
                "verifier lacks: give an escalation_share or a threshold"
            )
        shares = [i / n for i in range(n + 1)]
        best = float(np.mean(strong))
        for point in escalation_curve(table, shares):
            if point["accuracy"] >= target.quality * best:
                return point["threshold"]
        return math.inf
    raise VerifierError("an empty target: give escalation_share, quality or cost_share")


# ----------------------------------------------------------------------------- training

# Escalation shares over which candidates are compared (the mean gap closed over them), when
# the strong model's outcomes are known; otherwise by AUC of P(right).
SELECTION_SHARES = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40)
DEFAULT_TARGET = VerifierTarget(escalation_share=0.25)


def auc(scores: np.ndarray, right: np.ndarray) -> float:
    """Probability that a right answer scores above a wrong one (ties count half)."""
    positive = right >= 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _selection_score(table: Mapping[str, Any]) -> float:
    if table.get("strong_right") is not None:
        return float(np.mean([p["gap_closed"] for p in escalation_curve(table, SELECTION_SHARES)]))
    return auc(np.asarray(table["scores"]), np.asarray(table["right"]))


def _candidates() -> list[Any]:
    # The training code (and scikit-learn behind it) loads only to train.
    from pointsman.learning.training import linear_candidate, trees_candidate

    return [
        linear_candidate("linear(answer)", ("answer",), None, 0.1, 1.0),
        trees_candidate("trees(answer)", ("answer",), depth=2, iters=200, rate=0.05),
        linear_candidate("linear(answer+tfidf)", ("answer",), "tfidf", 2.0, 0.1),
    ]


def train_verifier(
    examples: Sequence[VerifierExample],
    folds: int = 5,
    seed: int = 0,
    target: VerifierTarget | None = None,
    progress: Progress | None = None,
    meta: Mapping[str, Any] | None = None,
) -> tuple[VerifierArtifact, dict[str, Any]]:
    """Compare learners by cross-validation (folds by prompt), ensembles of pairs included,
    refit the best on every example, and calibrate the threshold on its out-of-fold
    predictions. Returns the artifact and a report (selection table, out-of-fold curve)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise VerifierError("training needs scikit-learn: pip install 'pointsman[train]'") from None
    from pointsman.learning.training import fold_ids  # training-only, as above

    say = progress or (lambda _message: None)
    if len(examples) < 2 * folds:
        raise VerifierError(f"{len(examples)} example(s): need at least {2 * folds} to cross-validate")
    right = np.array([e.right for e in examples], dtype=np.float64)
    if not ((right >= 0.5).any() and (right < 0.5).any()):
        raise VerifierError("every example is rated the same: need both right and wrong answers")
    strong_known = all(e.strong_right is not None for e in examples)
    strong = np.array([e.strong_right for e in examples], dtype=np.float64) if strong_known else None
    costs_known = all(e.cheap_cost is not None and e.strong_cost is not None for e in examples)
    ratio = None
    if costs_known:
        ratio = float(
            sum(e.cheap_cost or 0.0 for e in examples)
            / max(1e-12, sum(e.strong_cost or 0.0 for e in examples))
        )
    say(f"features of {len(examples)} answers")
    tfidf = TfidfEncoder.fit([_joined(e.prompt, e.answer) for e in examples])
    artifact = VerifierArtifact(EnsemblePredictor([], []), tfidf, 0.5)
    feats = artifact.features(examples)
    y = right[:, None]
    fold = fold_ids([e.prompt for e in examples], folds, seed)

    def table(scores: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"scores": scores, "right": right, "cost_ratio": ratio}
        if strong is not None:
            out["strong_right"] = strong
        return out

    oof: dict[str, np.ndarray] = {}
    candidates = _candidates()
    for candidate in candidates:
        say(f"cross-validating {candidate.name}")
        pred = np.zeros(len(examples))
        for f in range(folds):
            fit_idx, val_idx = np.where(fold != f)[0], np.where(fold == f)[0]
            fold_model = candidate.fit(feats, y, fit_idx, None)
            pred[val_idx] = fold_model.predict(feats.subset(val_idx))[:, 0]
        oof[candidate.name] = pred
    names = [c.name for c in candidates]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            oof[f"{a} + {b}"] = (oof[a] + oof[b]) / 2
    scored = sorted(
        ((round(_selection_score(table(p)), 4), round(auc(p, right), 4), name) for name, p in oof.items()),
        key=lambda row: -row[0],
    )
    selection = [{"candidate": name, "score": score, "auc": area} for score, area, name in scored]
    chosen = scored[0][2]
    say(f"chose {chosen}; refitting on every example")
    members = [c for c in candidates if c.name in chosen.split(" + ")]
    every = np.arange(len(examples))
    fitted = [c.fit(feats, y, every, None) for c in members]
    predictor: Predictor = fitted[0] if len(fitted) == 1 else EnsemblePredictor(fitted, [1.0] * len(fitted))
    uses_tfidf = any("tfidf" in c.name for c in members)
    calibration = table(oof[chosen])
    goal = target or DEFAULT_TARGET
    artifact = VerifierArtifact(
        predictor,
        tfidf if uses_tfidf else None,
        threshold_for(calibration, goal),
        calibration,
        {
            **dict(meta or {}),
            "examples": len(examples),
            "folds": folds,
            "seed": seed,
            "chosen": chosen,
            # Served with a second cheap answer only if trained with one (else it is ignored).
            "second_opinion": all(e.second is not None for e in examples),
            # Token logprobs are asked of upstreams only for a verifier that learned from them.
            "logprobs": sum(1 for e in examples if e.logprobs) > len(examples) / 2,
            "target": {k: v for k, v in vars_of(goal).items() if v is not None},
            "selection": selection,
        },
    )
    report = {
        "examples": len(examples),
        "right_share": round(float(right.mean()), 4),
        "selection_metric": "mean gap closed at 10-40% escalation (out-of-fold)"
        if strong is not None
        else "AUC of P(right) (out-of-fold)",
        "selection": selection,
        "chosen": chosen,
        "threshold": artifact.threshold,
        "target": artifact.meta["target"],
        "curve": [
            {k: round(v, 4) for k, v in p.items()} for p in escalation_curve(calibration, SELECTION_SHARES)
        ],
    }
    return artifact, report


def vars_of(target: VerifierTarget) -> dict[str, float | None]:
    return {
        "escalation_share": target.escalation_share,
        "quality": target.quality,
        "cost_share": target.cost_share,
    }


# ----------------------------------------------------------------------------- loading and CLI


def load_examples(path: str | Path) -> list[VerifierExample]:
    """Examples from RouteLLM's GSM8K answers (a folder or ``gsm8k_responses.csv``), or a JSONL
    file of ``{"prompt", "answer", "right"}`` objects (``right`` 0..1 or true/false; optional
    ``strong_right``, ``finish_reason``, ``logprobs``, ``second``, ``cheap_cost``,
    ``strong_cost``)."""
    source = Path(path)
    if source.is_dir() or source.suffix == ".csv":
        return load_gsm8k_answers(source)
    if not source.exists():
        raise VerifierError(f"{source}: no such file")
    out = []
    with source.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(
                    VerifierExample(
                        prompt=str(row["prompt"]),
                        answer=str(row["answer"]),
                        right=float(row["right"]),
                        strong_right=None if row.get("strong_right") is None else float(row["strong_right"]),
                        finish_reason=row.get("finish_reason"),
                        logprobs=row.get("logprobs"),
                        second=row.get("second"),
                        cheap_cost=row.get("cheap_cost"),
                        strong_cost=row.get("strong_cost"),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise VerifierError(f"{source}:{number}: not a verifier example ({exc!r})") from None
    return out


def register(subparsers: Any) -> None:
    """Add the `train-verifier` subcommand."""
    t = subparsers.add_parser(
        "train-verifier",
        help="train a learned cascade verifier on answers and their correctness",
        description="Train the learned verifier (cascade judge `verifier`): P(cheap answer right) "
        "from the prompt and the answer. Learners are compared by cross-validation (folds by "
        "prompt) and the escalation threshold is set on out-of-fold predictions. By default the "
        "seeded test split of DATA is held out (--all-data trains on every row).",
    )
    t.add_argument("data", nargs="?", help="RouteLLM GSM8K folder/CSV with answers, or a JSONL of examples")
    t.add_argument("--out", required=True, help="folder to write verifier.json and arrays.npz into")
    t.add_argument("--folds", type=int, default=5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--all-data", action="store_true", help="train on every row (no held-out test)")
    goal = t.add_mutually_exclusive_group()
    goal.add_argument("--escalation-share", type=float, help="escalate at most this share (default 0.25)")
    goal.add_argument("--quality", type=float, help="keep this share of the strong model's accuracy")
    goal.add_argument("--cost-share", type=float, help="spend at most this share of always-strong's cost")
    logs = t.add_argument_group("from logs", "rated records with stored prompts and answers")
    logs.add_argument("--from-logs", action="store_true", help="train on rated records instead of DATA")
    logs.add_argument("--config", help="the server's config: its record store")
    logs.add_argument("--db", help="the SQLite record file")
    logs.add_argument("--since", help="only records this recent, e.g. 12h, 30d")
    logs.add_argument("--deployments", default="", help="the cheap deployments whose answers to learn from")
    t.add_argument("--json", action="store_true", help="print the training report as JSON")
    t.set_defaults(func=cmd_train_verifier)


def cmd_train_verifier(args: Any) -> int:
    """`pointsman train-verifier`: examples -> a verifier artifact and its report."""

    def fail(message: str) -> int:
        if args.json:
            print(json.dumps({"error": message}))
        else:
            print(f"error: {message}", file=sys.stderr)
        return 1

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    target = VerifierTarget(args.escalation_share, args.quality, args.cost_share)
    given = [v for v in vars_of(target).values() if v is not None]
    if any(not 0 < v <= 1 for v in given):
        return fail("--escalation-share, --quality and --cost-share take a share in (0, 1]")
    try:
        if args.from_logs:
            if args.data:
                return fail("--from-logs reads the records; give no DATA")
            examples, skipped, split = _examples_from_logs(args)
        else:
            if not args.data:
                return fail("give DATA (a GSM8K answers folder/CSV or a JSONL of examples), or --from-logs")
            examples, skipped = load_examples(args.data), {}
            split = "all rows"
            if not args.all_data:
                train, _ = split_by_prompt(
                    [e.prompt for e in examples], args.test_fraction, args.seed, "test"
                )
                examples = [examples[i] for i in train]
                split = f"train split (seed {args.seed}, {args.test_fraction:.0%} of prompts held out)"
        meta = {"command": "pointsman " + " ".join(sys.argv[1:]), "split": split, "skipped": skipped}
        artifact, report = train_verifier(
            examples, args.folds, args.seed, target if given else None, say, meta
        )
    except VerifierError as exc:
        return fail(str(exc))
    folder = artifact.save(args.out)
    report = {"artifact": str(folder), "split": split, "skipped": skipped, **report}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['examples']} answers ({report['right_share']:.1%} right); {split}")
    for why, n in skipped.items():
        print(f"  skipped {n}: {why}")
    print(f"learners ({report['selection_metric']}):")
    for row in report["selection"]:
        mark = "  <- chosen" if row["candidate"] == report["chosen"] else ""
        print(f"  {row['candidate']}: {row['score']} (AUC {row['auc']}){mark}")
    print("out-of-fold escalation curve:")
    for point in report["curve"]:
        extra = "".join(
            f"  {k} {point[k]:.1%}" for k in ("accuracy", "gap_closed", "cost_share") if k in point
        )
        print(f"  escalate {point['escalation_share']:.1%}: wrong caught {point['wrong_caught']:.1%}{extra}")
    print(f"wrote {folder} (threshold {artifact.threshold:.4f} for {report['target']})")
    print(f"config: cascade: {{judges: [verifier], verifier: {{artifact: {folder}}}}}")
    return 0


def _examples_from_logs(args: Any) -> tuple[list[VerifierExample], dict[str, int], str]:
    since = None
    if args.since:
        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as exc:
            raise VerifierError(f"--since: {exc}") from None
    try:
        store = open_records(args.config, args.db)
    except LogsError as exc:
        raise VerifierError(str(exc)) from None
    try:
        records = store.feedback_records(since)
    finally:
        store.close()
    if not records:
        raise VerifierError("no rated requests in the records: rate answers with POST /v1/feedback first")
    examples, skipped = examples_from_records(records, [d for d in args.deployments.split(",") if d] or None)
    if not examples:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items())
        hint = ""
        if "no stored prompt or answer" in skipped:
            hint = "; set store: {store_content: true} in the config to keep prompts and answers"
        raise VerifierError(f"{len(records)} rated request(s), none usable ({reasons}){hint}")
    split = "all rated records" + (f" since {args.since} ago" if args.since else "")
    return examples, skipped, split
