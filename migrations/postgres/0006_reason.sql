-- Why a build failed or was cancelled, as JSON a program can match on
-- (`{"kind": "exit", "code": 2}`, `{"kind": "runner_lost", …}`); `error` keeps its words.
ALTER TABLE builds ADD COLUMN reason JSONB;
