-- Records: body is the encoded entry exactly as hashed; hash = SHA-256(body)
-- is the chain hash the next entry carries. The other columns are copies
-- for the query indexes only: results are decoded from body.
-- A rowid table: rows hold a blob of several hundred bytes, and secondary
-- indexes then carry an 8-byte rowid instead of (log, seq).
CREATE TABLE audit_records (
  id            INTEGER PRIMARY KEY,
  log           TEXT    NOT NULL,
  seq           INTEGER NOT NULL,
  time_ns       INTEGER NOT NULL,
  outcome       TEXT    NOT NULL,
  org           TEXT    NOT NULL,
  principal     TEXT    NOT NULL,
  job_id        TEXT    NOT NULL,
  task_id       TEXT    NOT NULL,
  access_key_id TEXT    NOT NULL,
  bucket        TEXT    NOT NULL,
  body          BLOB    NOT NULL,
  hash          BLOB    NOT NULL,
  UNIQUE (log, seq)
);
CREATE INDEX audit_records_time      ON audit_records (time_ns, log, seq);
CREATE INDEX audit_records_org       ON audit_records (org, time_ns);
CREATE INDEX audit_records_principal ON audit_records (principal, time_ns);
CREATE INDEX audit_records_job       ON audit_records (job_id, time_ns);
CREATE INDEX audit_records_task      ON audit_records (task_id, time_ns);
CREATE INDEX audit_records_key       ON audit_records (access_key_id, time_ns);
CREATE INDEX audit_records_bucket    ON audit_records (bucket, time_ns);
-- No index on outcome alone: three values, so the time index scanned
-- newest first with a filter serves it; each index costs every append.

-- Merkle tree nodes (golang.org/x/mod/sumdb/tlog stored hash indexes).
CREATE TABLE audit_hashes (
  log  TEXT    NOT NULL,
  idx  INTEGER NOT NULL,
  hash BLOB    NOT NULL,
  PRIMARY KEY (log, idx)
) WITHOUT ROWID;

-- The head of each log: written in the same transaction as its records.
CREATE TABLE audit_heads (
  log  TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  hash BLOB    NOT NULL
);

-- Signed checkpoints (C2SP tlog-checkpoint notes).
CREATE TABLE audit_checkpoints (
  log        TEXT    NOT NULL,
  size       INTEGER NOT NULL,
  note       BLOB    NOT NULL,
  created_ns INTEGER NOT NULL,
  PRIMARY KEY (log, size)
) WITHOUT ROWID;

-- Guard rails (deterrents, not evidence: whoever owns the file can drop
-- them). The evidence is the signed, anchored checkpoints.
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER audit_hashes_no_update BEFORE UPDATE ON audit_hashes
BEGIN SELECT RAISE(ABORT, 'audit_hashes is append-only'); END;
CREATE TRIGGER audit_hashes_no_delete BEFORE DELETE ON audit_hashes
BEGIN SELECT RAISE(ABORT, 'audit_hashes is append-only'); END;
