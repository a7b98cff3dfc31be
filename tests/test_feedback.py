"""Feedback: `POST /v1/feedback` rates an answered request, stored with its record (SQLite and
PostgreSQL), and `pointsman train --from-logs` retrains a router from the rated records."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from pointsman.learning.artifact import RouterArtifact
from pointsman.learning.commands import main as learning_main
from pointsman.learning.datasets import load_bundled, standard_splits
from pointsman.store import RecordStore
from tests.conftest import deployment

HELLO = [{"role": "user", "content": "hello"}]
MASTER = "mk-feedback-master"


def config(upstream: Any, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "deployments": [deployment(upstream, "big"), deployment(upstream, "small")],
        "models": {"auto": {"deployments": ["small", "big"]}},
    }
    cfg.update(extra)
    return cfg


def ask(client: openai.OpenAI, content: str = "hello", model: str = "auto") -> str:
    """Send one chat request; the request id the answer carries."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}]
    )
    return raw.headers["x-pointsman-request-id"]


def rate(client: openai.OpenAI, **body: Any) -> dict[str, Any]:
    response = client.post("/feedback", body=body, cast_to=httpx.Response)
    return response.json()


def test_a_rating_is_stored_with_the_record_of_the_request(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    request_id = ask(client)

    reply = rate(client, request_id=request_id, thumbs="up", comment="spot on")

    assert reply == {
        "object": "feedback",
        "request_id": request_id,
        "score": 1.0,
        "comment": "spot on",
        "replaced": False,
        "deployment": "small",
    }
    record = server.router.store.record(request_id)
    assert record["deployment"] == "small"
    assert record["feedback"]["score"] == 1.0 and record["feedback"]["comment"] == "spot on"


def test_a_later_rating_replaces_the_earlier_one(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    request_id = ask(client)
    rate(client, request_id=request_id, thumbs="down")

    reply = rate(client, request_id=request_id, score=0.75)

    assert reply["replaced"] is True
    [rated] = server.router.store.feedback_records()
    assert rated["request_id"] == request_id
    assert rated["feedback"] == {"score": 0.75, "comment": None, "ts": pytest.approx(time.time(), abs=30)}


def test_rating_an_unknown_request_is_404(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    ask(client)

    with pytest.raises(openai.NotFoundError) as caught:
        rate(client, request_id="req_does_not_exist", score=1)

    assert caught.value.code == "request_not_found"
    assert "req_does_not_exist" in caught.value.message


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"score": 1}, "request_id", "required"),
        ({"request_id": "{id}"}, "score", "give 'score'"),
        ({"request_id": "{id}", "score": 1.5}, "score", "from 0 to 1"),
        ({"request_id": "{id}", "score": "good"}, "score", "a number"),
        ({"request_id": "{id}", "score": True}, "score", "a number"),
        ({"request_id": "{id}", "thumbs": "sideways"}, "thumbs", "'up' or 'down'"),
        ({"request_id": "{id}", "score": 1, "thumbs": "up"}, "thumbs", "not both"),
        ({"request_id": "{id}", "score": 1, "comment": 5}, "comment", "a string"),
        ({"request_id": "{id}", "score": 1, "stars": 5}, "stars", "unknown field"),
    ],
)
def test_a_bad_field_is_400_naming_it(upstream, serve, body, param, words):
    server = serve(config(upstream))
    client = server.client()
    request_id = ask(client)
    body = {k: request_id if v == "{id}" else v for k, v in body.items()}

    with pytest.raises(openai.BadRequestError) as caught:
        rate(client, **body)

    assert caught.value.param == param
    assert caught.value.code == "invalid_feedback"
    assert words in caught.value.message
    assert server.router.store.record(request_id)["feedback"] is None


def test_malformed_json_is_400(upstream, serve):
    server = serve(config(upstream))
    response = httpx.post(
        f"{server.url}/v1/feedback", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_refused_rating_has_a_request_id_and_a_record(upstream, serve):
    server = serve(config(upstream))
    response = httpx.post(f"{server.url}/v1/feedback", json={"request_id": "x", "score": "good"})

    assert response.status_code == 400
    refused_id = response.headers["x-pointsman-request-id"]
    server.router.store.flush()
    record = server.router.store.record(refused_id)
    assert record is not None and record["status"] == 400
    assert "score" in record["error"]


def test_with_virtual_keys_a_key_rates_only_its_own_requests(upstream, serve, monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    server = serve(config(upstream))
    admin = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {MASTER}"})
    alice = admin.post("/admin/keys", json={"name": "alice"}).json()["key"]
    bob = admin.post("/admin/keys", json={"name": "bob"}).json()["key"]
    request_id = ask(server.client(api_key=alice))

    with pytest.raises(openai.AuthenticationError):
        rate(server.client(api_key="pm-wrong"), request_id=request_id, score=1)
    # Bob cannot even learn that Alice's request exists.
    with pytest.raises(openai.NotFoundError):
        rate(server.client(api_key=bob), request_id=request_id, score=0)
    assert rate(server.client(api_key=alice), request_id=request_id, score=0.5)["score"] == 0.5
    assert rate(server.client(api_key=MASTER), request_id=request_id, score=0.25)["replaced"] is True
    assert server.router.store.record(request_id)["feedback"]["score"] == 0.25


def test_static_api_keys_guard_feedback_too(upstream, serve):
    server = serve(config(upstream, server={"api_keys": ["sk-client"]}))
    request_id = ask(server.client())
    with pytest.raises(openai.AuthenticationError):
        rate(server.client(api_key="sk-other"), request_id=request_id, score=1)
    assert rate(server.client(), request_id=request_id, score=1)["score"] == 1.0


def test_retention_removes_feedback_with_its_record(tmp_path):
    store = RecordStore(tmp_path / "records.db", retention_days=1)
    try:
        store.add({"request_id": "old", "ts": time.time() - 3 * 86400, "status": 200, "attempts": []})
        store.add({"request_id": "new", "ts": time.time(), "status": 200, "attempts": []})
        assert store.add_feedback("old", 1.0, None, time.time())
        assert store.add_feedback("new", 0.0, "wrong", time.time())
        assert not store.add_feedback("missing", 1.0, None, time.time())
        assert store.apply_retention() == 1
        assert [r["request_id"] for r in store.feedback_records()] == ["new"]
    finally:
        store.close()


# --- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_store_keeps_feedback_joined_to_the_record(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    from pointsman.store_postgres import PostgresRecordStore
    from tests.test_store_postgres import PG_URL, postgres_available

    if not postgres_available():
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    schema = f"pm_test_{uuid.uuid4().hex[:12]}"
    store = PostgresRecordStore(PG_URL, schema=schema, spill_dir=tmp_path / "spill", flush_interval_s=0.05)
    try:
        # Queued but not yet written: the feedback still finds its record.
        store.add(
            {
                "request_id": "r1",
                "ts": time.time(),
                "status": 200,
                "deployment": "big",
                "prompt": "user: 2+2?",
                "decision": {"strategy": "ordered"},
                "attempts": [],
            }
        )
        assert store.add_feedback("r1", 0.5, "half right", time.time())
        assert not store.add_feedback("nope", 1.0, None, time.time())
        assert store.add_feedback("r1", 1.0, None, time.time())
        record = store.record("r1")
        assert record["decision"] == {"strategy": "ordered"}
        assert record["feedback"]["score"] == 1.0 and record["feedback"]["comment"] is None
        assert store.record("nope") is None
        [rated] = store.feedback_records()
        assert rated["request_id"] == "r1" and rated["prompt"] == "user: 2+2?"
    finally:
        store.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# --- pointsman train --from-logs --------------------------------------------------------------


def rated_traffic(server: Any, prompts: int = 48) -> list[str]:
    """Send GSM8K training prompts through `auto` (spread over both deployments) and rate each
    answer with the recorded outcome of the model the deployment stands for."""
    data = standard_splits(load_bundled("gsm8k")).train.ordered_two()
    weak, strong = data.models
    client = server.client()
    sent = []
    for i in range(prompts):
        prompt = data.prompts[i]
        request_id = ask(client, prompt)
        answered = server.router.store.record(request_id)["deployment"]
        outcome = data.quality[i, 1 if answered == "big" else 0]
        rate(client, request_id=request_id, thumbs="up" if outcome else "down")
        sent.append(prompt)
    return sent


def test_train_from_logs_writes_a_router_that_serves(upstream, serve, tmp_path, capsys):
    cfg = config(
        upstream,
        store={"store_content": True},
        models={"auto": {"strategy": "weighted", "deployments": ["small", "big"], "options": {"seed": 1}}},
    )
    server = serve(cfg)
    prompts = rated_traffic(server)
    server.router.store.flush()

    out = tmp_path / "from-logs"
    code = learning_main(
        [
            "train",
            "--from-logs",
            "--db",
            str(server.db),
            "--out",
            str(out),
            "--encoders",
            "tfidf,signals",
            "--min-ratings",
            "5",
            "--json",
        ]
    )

    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["kind"] == "two_model" and set(report["models"]) == {"big", "small"}
    assert report["logs"]["used_requests"] == len(prompts)
    assert report["method"] == "partial"
    artifact = RouterArtifact.load(out)
    # The same prompt gets the same prediction from the reloaded artifact.
    again = RouterArtifact.load(out)
    assert (artifact.predict(prompts[:5]) == again.predict(prompts[:5])).all()

    # And it routes inside the server like any other learned router.
    mapping = {artifact.tiers["strong"]: "strong", artifact.tiers["weak"]: "weak"}
    served = serve(
        config(
            upstream,
            models={
                "auto": {
                    "strategy": "learned",
                    "options": {
                        "artifact": str(out),
                        "mapping": {mapping["big"]: ["big"], mapping["small"]: ["small"]},
                    },
                }
            },
        )
    )
    raw = served.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompts[0]}]
    )
    # Both deployments are priced, so the router weighs dollars (the cost model's reasons).
    assert raw.headers["x-pointsman-route"].split(":")[1] in {"best_quality", "cheaper_enough"}


def test_train_from_logs_says_when_records_keep_no_prompts(upstream, serve, tmp_path, capsys):
    server = serve(config(upstream))
    client = server.client()
    for _ in range(3):
        rate(client, request_id=ask(client), score=1)
    server.router.store.flush()

    code = learning_main(
        ["train", "--from-logs", "--db", str(server.db), "--out", str(tmp_path / "x"), "--json"]
    )

    assert code == 1
    message = json.loads(capsys.readouterr().out)["error"]
    assert "3 rated request(s)" in message and "store_content: true" in message
    assert not (tmp_path / "x").exists()


def test_train_from_logs_without_ratings_says_how_to_get_them(upstream, serve, tmp_path, capsys):
    server = serve(config(upstream, store={"store_content": True}))
    ask(server.client())
    server.router.store.flush()

    code = learning_main(
        ["train", "--from-logs", "--db", str(server.db), "--out", str(tmp_path / "x"), "--json"]
    )

    assert code == 1
    assert "POST /v1/feedback" in json.loads(capsys.readouterr().out)["error"]
    assert Path(server.db).exists()
