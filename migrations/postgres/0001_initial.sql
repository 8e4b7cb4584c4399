-- jobctl schema, PostgreSQL.
CREATE TABLE builds (
    id           BIGSERIAL PRIMARY KEY,
    job_id       TEXT        NOT NULL,
    status       TEXT        NOT NULL CHECK (status IN
                   ('created', 'running', 'successful', 'failed', 'skipped', 'cancelled')),
    created_at   TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    config       JSONB       NOT NULL,        -- the resolved job when the build was made
    config_hash  TEXT        NOT NULL,
    retval       JSONB,
    exit_code    INTEGER,
    signal       INTEGER,
    timed_out    BOOLEAN     NOT NULL DEFAULT FALSE,
    error        TEXT,                        -- why it failed, was skipped or cancelled
    stderr_tail  TEXT,
    attempt      INTEGER     NOT NULL DEFAULT 1,
    host         TEXT,
    pid          INTEGER,                     -- of the jobctl that ran it
    pgid         INTEGER,                     -- the job's process group, while it runs
    worker       TEXT
);
CREATE INDEX builds_job ON builds (job_id, id);
CREATE INDEX builds_job_status ON builds (job_id, status, id);
CREATE INDEX builds_running ON builds (status) WHERE status IN ('created', 'running');

CREATE TABLE build_pins (
    build_id      BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    dep_job_id    TEXT   NOT NULL,
    dep_build_id  BIGINT,
    PRIMARY KEY (build_id, dep_job_id)
);

CREATE TABLE progress (
    build_id    BIGINT      NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    path        TEXT        NOT NULL,         -- JSON array of group names, [] for the top
    seq         BIGINT      NOT NULL,
    current     BIGINT      NOT NULL,
    total       BIGINT,
    status_line TEXT,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (build_id, path)
);
-- A new group's place: after the build's highest `seq`.
CREATE INDEX progress_seq ON progress (build_id, seq);

CREATE TABLE logs (
    id        BIGSERIAL   PRIMARY KEY,
    build_id  BIGINT      NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    at        TIMESTAMPTZ NOT NULL,
    level     INTEGER     NOT NULL,           -- 10 debug, 20 info, 30 warning, 40 error, 50 critical
    stream    TEXT        NOT NULL CHECK (stream IN ('stdout', 'stderr', 'channel')),
    message   TEXT        NOT NULL
);
CREATE INDEX logs_build ON logs (build_id, id);
CREATE INDEX logs_level_at ON logs (level, at);
