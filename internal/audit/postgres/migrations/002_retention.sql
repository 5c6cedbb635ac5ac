-- Retention: entries below a log's prune floor minus one may be deleted
-- (the boundary entry floor-1 and the signed checkpoint at floor stay).
CREATE TABLE IF NOT EXISTS audit_prune (
  log    text PRIMARY KEY,
  before bigint NOT NULL
);

CREATE OR REPLACE FUNCTION audit_refuse_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND OLD.seq < COALESCE((SELECT before - 1 FROM audit_prune WHERE log = OLD.log), 0) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_records is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS audit_records_no_change ON audit_records;
CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
  FOR EACH ROW EXECUTE FUNCTION audit_refuse_record_change();
ALTER TABLE audit_records ENABLE ALWAYS TRIGGER audit_records_no_change;
