-- Records: body is the encoded entry exactly as hashed; hash = SHA-256(body)
-- is the chain hash the next entry carries. The other columns are copies
-- for the query indexes only: results are decoded from body.
CREATE TABLE IF NOT EXISTS audit_records (
  log           text   NOT NULL,
  seq           bigint NOT NULL,
  time_ns       bigint NOT NULL,
  outcome       text   NOT NULL,
  org           text   NOT NULL,
  principal     text   NOT NULL,
  job_id        text   NOT NULL,
  task_id       text   NOT NULL,
  access_key_id text   NOT NULL,
  bucket        text   NOT NULL,
  body          bytea  NOT NULL,
  hash          bytea  NOT NULL,
  PRIMARY KEY (log, seq)
);
CREATE INDEX IF NOT EXISTS audit_records_time      ON audit_records (time_ns DESC, log DESC, seq DESC);
CREATE INDEX IF NOT EXISTS audit_records_org       ON audit_records (org, time_ns DESC);
CREATE INDEX IF NOT EXISTS audit_records_principal ON audit_records (principal, time_ns DESC);
CREATE INDEX IF NOT EXISTS audit_records_job       ON audit_records (job_id, time_ns DESC);
CREATE INDEX IF NOT EXISTS audit_records_task      ON audit_records (task_id, time_ns DESC);
CREATE INDEX IF NOT EXISTS audit_records_key       ON audit_records (access_key_id, time_ns DESC);
CREATE INDEX IF NOT EXISTS audit_records_bucket    ON audit_records (bucket, time_ns DESC);
CREATE INDEX IF NOT EXISTS audit_records_outcome   ON audit_records (outcome, time_ns DESC);

-- Merkle tree nodes (golang.org/x/mod/sumdb/tlog stored hash indexes).
CREATE TABLE IF NOT EXISTS audit_hashes (
  log  text   NOT NULL,
  idx  bigint NOT NULL,
  hash bytea  NOT NULL,
  PRIMARY KEY (log, idx)
);

-- One head row per log (shard); appends compare-and-swap it, which fences
-- a replica that lost its advisory lock.
CREATE TABLE IF NOT EXISTS audit_heads (
  log  text PRIMARY KEY,
  size bigint NOT NULL,
  hash bytea  NOT NULL
);

-- Signed checkpoints (C2SP tlog-checkpoint notes).
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  log        text   NOT NULL,
  size       bigint NOT NULL,
  note       bytea  NOT NULL,
  created_ns bigint NOT NULL,
  PRIMARY KEY (log, size)
);

-- Guard rails (deterrents, not evidence: a superuser can drop them). ENABLE
-- ALWAYS keeps them firing under session_replication_role = replica.
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['audit_records', 'audit_hashes', 'audit_checkpoints'] LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_no_change', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()', t || '_no_change', t);
    EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', t, t || '_no_change');
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_no_truncate', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()', t || '_no_truncate', t);
    EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', t, t || '_no_truncate');
  END LOOP;
END $$;
