-- The query indexes move off the commit path. An append writes only what
-- durability and tamper evidence need (the entry, its chain hash, Merkle
-- nodes, the head); audit_index is built from audit_records afterwards by
-- the store's indexer, and every query first brings it up to date, so a
-- query still sees every durable record. audit_index is derived data:
-- verify compares each of its rows with the entry it points to.
DROP INDEX audit_records_time;
DROP INDEX audit_records_org;
DROP INDEX audit_records_principal;
DROP INDEX audit_records_job;
DROP INDEX audit_records_task;
DROP INDEX audit_records_key;
DROP INDEX audit_records_bucket;
-- id is the audit_records id of the entry; the indexer appends in id order,
-- so MAX(id) is how far it got.
CREATE TABLE audit_index (
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
  bucket        TEXT    NOT NULL
);
CREATE INDEX audit_index_time      ON audit_index (time_ns, log, seq);
CREATE INDEX audit_index_org       ON audit_index (org, time_ns);
CREATE INDEX audit_index_principal ON audit_index (principal, time_ns);
CREATE INDEX audit_index_job       ON audit_index (job_id, time_ns);
CREATE INDEX audit_index_task      ON audit_index (task_id, time_ns);
CREATE INDEX audit_index_key       ON audit_index (access_key_id, time_ns);
CREATE INDEX audit_index_bucket    ON audit_index (bucket, time_ns);
