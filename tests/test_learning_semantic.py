"""Semantic routes: nearest utterances decide, fitted thresholds make unrelated prompts
abstain to the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from pointsman.learning.semantic import Route, SemanticRouter

ROUTES = [
    Route(
        "maths",
        [
            "solve the equation for x",
            "what is the derivative of x squared",
            "compute the integral of sin x",
            "how many apples are left if she eats three of twelve",
            "find the probability of rolling two sixes",
        ],
    ),
    Route(
        "code",
        [
            "write a python function that reverses a list",
            "fix this javascript bug in my loop",
            "why does my rust code not compile",
            "implement binary search in java",
            "refactor this sql query",
        ],
        description="programming and software questions",
    ),
]

LABELLED = [
    ("what is 17 times 23", "maths"),
    ("solve 3x + 5 = 20", "maths"),
    ("differentiate x cubed plus two x", "maths"),
    ("what is the area of a circle with radius 4", "maths"),
    ("how do I sort a dictionary by value in python", "code"),
    ("write a function to check for palindromes", "code"),
    ("my c++ program crashes with a segfault", "code"),
    ("how do I read a csv file in pandas", "code"),
    ("what is a good name for a golden retriever puppy", None),
    ("recommend a novel for a long flight", None),
    ("what should I pack for a beach holiday", None),
    ("tell me about the history of the roman empire", None),
    ("integrate e to the x", "maths"),
    ("convert this loop to a list comprehension", "code"),
    ("which wine goes with salmon", None),
    ("what's the weather usually like in lisbon in may", None),
]


@pytest.fixture(scope="module")
def router() -> SemanticRouter:
    r = SemanticRouter([Route(x.name, list(x.utterances), x.description) for x in ROUTES], top_k=3)
    r.fit_thresholds([t for t, _ in LABELLED], [lbl for _, lbl in LABELLED], held_out=0.3, seed=0)
    return r


def test_prompts_go_to_the_route_with_the_most_similar_utterances(router: SemanticRouter) -> None:
    assert router.classify("what is the derivative of 5x squared")[0] == "maths"
    assert router.classify("write a python function that merges two lists")[0] == "code"


def test_unrelated_prompts_abstain_to_the_default(router: SemanticRouter) -> None:
    for text in ("which wine goes with salmon", "what should I pack for a beach holiday"):
        route, score = router.classify(text)
        assert route is None, (text, score)


def test_fitted_thresholds_are_reported_on_held_out_examples() -> None:
    r = SemanticRouter([Route(x.name, list(x.utterances), x.description) for x in ROUTES], top_k=3)
    texts = [t for t, _ in LABELLED]
    labels = [lbl for _, lbl in LABELLED]
    report = r.fit_thresholds(texts, labels, held_out=0.3, seed=0)
    assert report.fit_rows + report.held_out_rows == len(texts)
    assert set(report.thresholds) == {"maths", "code"}
    assert all(r.threshold is not None for r in r.routes)
    assert 0.0 <= report.accuracy <= 1.0


def test_a_threshold_of_one_makes_a_route_always_abstain() -> None:
    r = SemanticRouter([Route("maths", ["solve for x"], threshold=1.01)], top_k=1)
    assert r.classify("solve for x") == (None, pytest.approx(1.0, abs=1e-5))


def test_routes_save_and_load_with_their_thresholds(router: SemanticRouter, tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    router.save(path)
    again = SemanticRouter.load(path)
    assert [r.threshold for r in again.routes] == [r.threshold for r in router.routes]
    for text, _ in LABELLED:
        assert again.classify(text) == router.classify(text)


def test_labels_must_name_known_routes() -> None:
    r = SemanticRouter([Route("maths", ["solve for x"])])
    with pytest.raises(ValueError, match="unknown routes: poetry"):
        r.fit_thresholds(["a sonnet"], ["poetry"])
