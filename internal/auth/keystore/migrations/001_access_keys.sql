-- Version 1 is the table as earlier releases created it inline; IF NOT
-- EXISTS lets a database they made adopt it unchanged. The same file
-- serves SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS dispenser_access_keys (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	org TEXT NOT NULL,
	secret TEXT NOT NULL,
	created_unix BIGINT NOT NULL,
	disabled INTEGER NOT NULL DEFAULT 0
);
