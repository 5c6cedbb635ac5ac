-- Version 1 is the table as earlier releases created it inline; IF NOT
-- EXISTS lets a database they made adopt it unchanged.
CREATE TABLE IF NOT EXISTS revocations (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	value      TEXT NOT NULL,
	reason     TEXT NOT NULL,
	created_by TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS revocations_expires_at ON revocations (expires_at);
