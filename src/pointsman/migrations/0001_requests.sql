-- One row per request, the same columns as the SQLite store; decision and attempts as JSONB.
CREATE TABLE requests (
    request_id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    api_key TEXT,
    key_id TEXT,
    team TEXT,
    "user" TEXT,
    requested_model TEXT,
    route TEXT,
    reason TEXT,
    region TEXT,
    decision JSONB,
    attempts JSONB,
    deployment TEXT,
    status INTEGER,
    error TEXT,
    stream INTEGER,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    upstream_ms DOUBLE PRECISION,
    first_token_ms DOUBLE PRECISION,
    overhead_ms DOUBLE PRECISION,
    prompt TEXT,
    answer TEXT,
    language TEXT
);

-- The audit filters, each with ts so "newest first" and a time window read the index alone;
-- route and api_key are the other halves of the reason and key filters.
CREATE INDEX requests_ts ON requests (ts);
CREATE INDEX requests_key_id ON requests (key_id, ts);
CREATE INDEX requests_api_key ON requests (api_key, ts);
CREATE INDEX requests_requested_model ON requests (requested_model, ts);
CREATE INDEX requests_deployment ON requests (deployment, ts);
CREATE INDEX requests_reason ON requests (reason, ts);
CREATE INDEX requests_route ON requests (route, ts);
CREATE INDEX requests_region ON requests (region, ts);
CREATE INDEX requests_team ON requests (team, ts);
CREATE INDEX requests_user ON requests ("user", ts);
CREATE INDEX requests_language ON requests (language, ts);
