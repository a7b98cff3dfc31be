"""Fit the semantic cache's similarity threshold on labelled paraphrase pairs.

The pairs come from bench/data/paraphrase/gptcache_mock_pairs.jsonl (see the README beside
it: 96 sentence/paraphrase items from GPTCache's benchmark data, MIT). Positives are an item's
two sentences; negatives pair each item's sentences with those of its neighbour in the file
(same documentation page, same topic, a different statement: the near misses a cache must not
serve). Items are split into a fit half and a held-out half in alternating blocks of four, and
negatives only pair items of the same half.

The threshold is the higher of two, both from the fit half only: the lowest (most recall) on a
0.005 grid whose precision there is at least --target, and a tail bound on the non-paraphrases,
their mean plus --z standard deviations (3.29: about one near miss in 2,000 scoring above it if
their similarities were normal). The second is what keeps a 48-pair fit set from choosing a
threshold just above the few near misses it happened to contain. Precision and recall are then
reported on the held-out half at that threshold and at the shipped default
(config.SemanticCacheSettings.threshold).

    python -m bench.semantic_threshold [--target 0.98] [--z 3.29] [--json] [--export PAIRS.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.config import SemanticCacheSettings
from pointsman.learning.encoders import WordLlamaEncoder

DATA = Path(__file__).parent / "data" / "paraphrase" / "gptcache_mock_pairs.jsonl"


def load_items(path: Path = DATA) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def labelled_pairs(items: list[dict[str, str]]) -> dict[str, list[tuple[str, str, int]]]:
    """{"fit": [...], "held_out": [...]}, each a list of (text a, text b, 1 paraphrase / 0 not)."""
    halves: dict[str, list[int]] = {"fit": [], "held_out": []}
    for i in range(len(items)):
        halves["fit" if (i // 4) % 2 == 0 else "held_out"].append(i)
    out: dict[str, list[tuple[str, str, int]]] = {}
    for name, members in halves.items():
        pairs = [(items[i]["origin"], items[i]["similar"], 1) for i in members]
        for a, b in zip(members, members[1:], strict=False):
            pairs.append((items[a]["origin"], items[b]["origin"], 0))
            pairs.append((items[a]["similar"], items[b]["origin"], 0))
        out[name] = pairs
    return out


def similarities(
    encoder: WordLlamaEncoder, pairs: list[tuple[str, str, int]]
) -> tuple[np.ndarray, np.ndarray]:
    left = encoder.encode([a for a, _, _ in pairs])
    right = encoder.encode([b for _, b, _ in pairs])
    return np.sum(left * right, axis=1), np.array([label for _, _, label in pairs])


def precision_recall(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    hit = scores >= threshold
    true_hits = int(np.sum(hit & (labels == 1)))
    false_hits = int(np.sum(hit & (labels == 0)))
    positives = int(np.sum(labels == 1))
    return {
        "threshold": round(threshold, 4),
        "precision": true_hits / (true_hits + false_hits) if true_hits + false_hits else 1.0,
        "recall": true_hits / positives if positives else 0.0,
        "hits": true_hits + false_hits,
        "false_hits": false_hits,
        "positives": positives,
        "negatives": int(np.sum(labels == 0)),
    }


def fit(scores: np.ndarray, labels: np.ndarray, target: float, z: float) -> float:
    empirical = 1.0
    for threshold in np.arange(0.5, 1.0001, 0.005):
        if precision_recall(scores, labels, float(threshold))["precision"] >= target:
            empirical = float(threshold)
            break
    negatives = scores[labels == 0]
    tail = float(negatives.mean() + z * negatives.std(ddof=1))
    # Up to the 0.005 grid: the threshold never sits below either bound.
    return min(1.0, float(np.ceil(max(empirical, tail) * 200 - 1e-9) / 200))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.98, help="precision the fit half must reach")
    parser.add_argument("--z", type=float, default=3.29, help="standard deviations above the near misses")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--export", type=Path, help="also write the labelled pairs (a, b, label, split) as JSON lines here"
    )
    args = parser.parse_args(argv)
    encoder = WordLlamaEncoder()
    split = labelled_pairs(load_items())
    if args.export is not None:
        args.export.write_text(
            "".join(
                json.dumps({"a": a, "b": b, "label": label, "split": name}, ensure_ascii=False) + "\n"
                for name, pairs in split.items()
                for a, b, label in pairs
            ),
            encoding="utf-8",
        )
    fit_scores, fit_labels = similarities(encoder, split["fit"])
    held_scores, held_labels = similarities(encoder, split["held_out"])
    fitted = fit(fit_scores, fit_labels, args.target, args.z)
    shipped = SemanticCacheSettings().threshold
    result = {
        "encoder": encoder.name,
        "target_precision_on_fit": args.target,
        "z": args.z,
        "fitted_threshold": fitted,
        "fit_at_fitted": precision_recall(fit_scores, fit_labels, fitted),
        "held_out_at_fitted": precision_recall(held_scores, held_labels, fitted),
        "shipped_default": shipped,
        "held_out_at_default": precision_recall(held_scores, held_labels, shipped),
        "fit_at_default": precision_recall(fit_scores, fit_labels, shipped),
        "similarity_quartiles": {
            "paraphrases": np.percentile(held_scores[held_labels == 1], [25, 50, 75]).round(3).tolist(),
            "non_paraphrases": np.percentile(held_scores[held_labels == 0], [25, 50, 75]).round(3).tolist(),
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            print(f"{name}: {value}")
    return result


if __name__ == "__main__":
    main()
