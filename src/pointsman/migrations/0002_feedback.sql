-- One rating per request (a later one replaces it), joined to the record by request id; it goes
-- when retention deletes its record.
CREATE TABLE feedback (
    request_id TEXT PRIMARY KEY REFERENCES requests (request_id) ON DELETE CASCADE,
    ts DOUBLE PRECISION NOT NULL,
    score DOUBLE PRECISION NOT NULL CHECK (score >= 0 AND score <= 1),
    comment TEXT
);

CREATE INDEX feedback_ts ON feedback (ts);
