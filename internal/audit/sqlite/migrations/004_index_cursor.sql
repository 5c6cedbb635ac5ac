-- The indexer's own cursor: for each log, the seq below which every entry
-- is in audit_index. The indexer advances it in the same transaction as
-- the index rows it writes, and indexes only entries its log's head
-- covers, so no row anyone inserts into audit_index (a "ghost" row with a
-- high id) can make it skip entries. It starts where the previous indexer
-- (which continued from MAX(id) of audit_index) got to, counting only index
-- rows that stand for an entry.
CREATE TABLE audit_index_cursor (
  log      TEXT PRIMARY KEY,
  next_seq INTEGER NOT NULL
);
INSERT INTO audit_index_cursor (log, next_seq)
SELECT h.log, COALESCE((SELECT MAX(r.seq) + 1 FROM audit_index i JOIN audit_records r ON r.id = i.id AND r.log = i.log AND r.seq = i.seq
  WHERE i.log = h.log), 0)
FROM audit_heads h;
