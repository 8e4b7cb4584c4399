-- jobctl schema, SQLite. Times are UTC, as sqlx writes chrono values (TEXT that sorts).
CREATE TABLE builds (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN
                   ('created', 'running', 'successful', 'failed', 'skipped', 'cancelled')),
    created_at   TEXT    NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    config       TEXT    NOT NULL,            -- JSON: the resolved job when the build was made
    config_hash  TEXT    NOT NULL,
    retval       TEXT,                        -- JSON
    exit_code    INTEGER,
    signal       INTEGER,
    timed_out    INTEGER NOT NULL DEFAULT 0,
    error        TEXT,                        -- why it failed, was skipped or cancelled
    stderr_tail  TEXT,
    attempt      INTEGER NOT NULL DEFAULT 1,
    host         TEXT,
    pid          INTEGER,                     -- of the jobctl that ran it
    pgid         INTEGER,                     -- the job's process group, while it runs
    worker       TEXT
);
-- Latest builds of a job, latest success of a job (job status, `jobctl builds JOB`).
CREATE INDEX builds_job ON builds (job_id, id);
CREATE INDEX builds_job_status ON builds (job_id, status, id);
-- Running builds (orphan detection, the TUI).
CREATE INDEX builds_running ON builds (status) WHERE status IN ('created', 'running');

-- The dependency builds a build uses the return values of.
CREATE TABLE build_pins (
    build_id      INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    dep_job_id    TEXT    NOT NULL,
    dep_build_id  INTEGER,
    PRIMARY KEY (build_id, dep_job_id)
);

-- The latest report per build and group path; `seq` keeps first-reported order.
CREATE TABLE progress (
    build_id    INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    path        TEXT    NOT NULL,             -- JSON array of group names, [] for the top
    seq         INTEGER NOT NULL,
    current     INTEGER NOT NULL,
    total       INTEGER,
    status_line TEXT,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (build_id, path)
);
-- A new group's place: after the build's highest `seq`.
CREATE INDEX progress_seq ON progress (build_id, seq);

CREATE TABLE logs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id  INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    at        TEXT    NOT NULL,
    level     INTEGER NOT NULL,               -- 10 debug, 20 info, 30 warning, 40 error, 50 critical
    stream    TEXT    NOT NULL CHECK (stream IN ('stdout', 'stderr', 'channel')),
    message   TEXT    NOT NULL
);
CREATE INDEX logs_build ON logs (build_id, id);
CREATE INDEX logs_level_at ON logs (level, at);
