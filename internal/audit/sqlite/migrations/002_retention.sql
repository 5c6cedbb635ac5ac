-- Retention: entries below a log's prune floor minus one may be deleted
-- (the boundary entry floor-1 and the signed checkpoint at floor stay).
CREATE TABLE audit_prune (
  log    TEXT PRIMARY KEY,
  before INTEGER NOT NULL
);
DROP TRIGGER audit_records_no_delete;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
WHEN OLD.seq >= COALESCE((SELECT before - 1 FROM audit_prune WHERE log = OLD.log), 0)
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER audit_prune_no_lowering BEFORE UPDATE ON audit_prune
WHEN NEW.before < OLD.before
BEGIN SELECT RAISE(ABORT, 'the prune floor only rises'); END;
