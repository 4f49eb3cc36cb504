-- Delete every row of customer_segments and return what the run compares its rows with (see
-- tasks/load/history.py): a DELETE, not a TRUNCATE, so that readers keep the previous rows until the
-- commit without waiting for a lock on the table.
delete from {{ customer_segments }}
returning customer_id, segment_id, segment_name, previous_segment_id, previous_segment_name, segment_since, as_of
