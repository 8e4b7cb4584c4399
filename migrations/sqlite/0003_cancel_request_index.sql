-- Each runner reads its builds' cancel requests every 200 ms. Through the index of open
-- builds that read grew with the run (3-5 ms at 10k planned builds); requests are rare,
-- so an index of only the requested builds keeps it near free.
CREATE INDEX builds_cancel_requested ON builds (host, pid) WHERE cancel_requested_at IS NOT NULL;
