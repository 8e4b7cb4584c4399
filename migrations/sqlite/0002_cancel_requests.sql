-- A request to cancel a build (from `jobctl tui`, or any process): the runner that owns the
-- build sees it at its next tick and cancels that build alone.
ALTER TABLE builds ADD COLUMN cancel_requested_at TEXT;
