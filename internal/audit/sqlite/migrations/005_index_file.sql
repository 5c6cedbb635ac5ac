-- The query index moves to a database file of its own beside the trail
-- (<path>.index): in this file every index transaction held the one write
-- lock the appends need. The index is derived from the entries, so it is
-- not copied: the indexer rebuilds it in the new file from the first entry,
-- in bulk (queries wait for it to catch up, as they always do), and
-- whatever rows anyone had slipped into the old table stay behind.
DROP TABLE audit_index;
DROP TABLE audit_index_cursor;
