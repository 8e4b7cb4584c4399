-- The builds that fill their job's `concurrency` (running, or reserved by a run), by job:
-- counted in every claim's transaction. Few rows at any time, however many are queued.
-- Its condition is `queue::OCCUPYING`, word for word, so that both databases use it.
CREATE INDEX builds_occupying ON builds (job_id)
    WHERE (status = 'running' OR (status = 'created' AND runner_id IS NOT NULL));
