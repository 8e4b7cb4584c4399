-- The queue: builds handed out by the store, to `jobctl build`'s own runner or to any
-- `jobctl worker`, under a lease and a fencing token (docs/architecture.md).
-- `created` is a queued build. It is ready when `waiting` (the builds of its run it waits
-- on that have not succeeded) is 0 and `not_before` (a retry's delay) has passed.
ALTER TABLE builds ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN not_before TEXT;
-- The runner the build is kept for (a `jobctl build` run); NULL: any worker may claim it.
ALTER TABLE builds ADD COLUMN run_owner TEXT;
ALTER TABLE builds ADD COLUMN concurrency INTEGER NOT NULL DEFAULT 1;
-- The job and its resolved arguments, for de-duplicating queued builds.
ALTER TABLE builds ADD COLUMN dedup_key TEXT;
-- Grows with every claim; every write about a claimed build carries it.
ALTER TABLE builds ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN lease_until TEXT;
-- The runner holding the lease, and its process's start time (clock ticks since boot),
-- so that a runner on the same host that is provably gone is rescued at once.
ALTER TABLE builds ADD COLUMN runner_id TEXT;
ALTER TABLE builds ADD COLUMN runner_since INTEGER;

-- Only queued builds for workers are indexed as ready or by their de-duplication key: the
-- builds of a `jobctl build` run (kept for it, no key) cost those indexes nothing.
CREATE INDEX builds_ready ON builds (id) WHERE status = 'created' AND waiting = 0 AND run_owner IS NULL;
CREATE INDEX builds_dedup ON builds (dedup_key) WHERE status = 'created' AND dedup_key IS NOT NULL;

-- The builds a build waits on (in its run): it is ready when all of them succeeded.
CREATE TABLE build_waits (
    build_id  INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    waits_on  INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    PRIMARY KEY (build_id, waits_on)
);
CREATE INDEX build_waits_on ON build_waits (waits_on);

-- The labels a worker must have to claim a build (`labels:` of its job).
CREATE TABLE build_labels (
    build_id  INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    label     TEXT    NOT NULL,
    PRIMARY KEY (build_id, label)
);

-- Every runner that claims: `jobctl worker` processes (and `jobctl build` runs), with
-- their heartbeat.
CREATE TABLE workers (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    labels        TEXT    NOT NULL,            -- JSON array
    slots         INTEGER NOT NULL,
    lease_secs    INTEGER NOT NULL,
    started_at    TEXT    NOT NULL,
    heartbeat_at  TEXT    NOT NULL,
    draining      INTEGER NOT NULL DEFAULT 0,
    stopped_at    TEXT
);
