-- PostgreSQL: bring customer_segment_history in line with the run's rows (customer_segments_incoming,
-- as customer_segments) for its as-of date (bound as as_of). Same result as
-- customer_segment_history.sqlite.sql. Runs inside the write transaction. Idempotent: a re-run of the
-- same date undoes what the earlier run of that date got wrong, and only that: a row it opened for a
-- customer who is now elsewhere is deleted and the row it closed reopened (then closed again below if
-- the customer moved anyway). Rows it got right stay, so a re-run rewrites only the changes.
{% include "_customer_segment_history_undo.sql" %}

-- The customers whose segment changed, who are new, or who are gone: one full join of this run's rows
-- with the open history rows finds all three (two anti-joins would each read every customer).
create temporary table customer_segment_history_changes on commit drop as
select
    coalesce(current_segments.customer_id, open_rows.customer_id) as customer_id,
    open_rows.customer_id is not null as has_open_row,
    current_segments.customer_id is not null as is_current,
    current_segments.segment_id,
    current_segments.segment_name,
    current_segments.run_id
from {{ customer_segments }} as current_segments
full join (
    select customer_id, segment_id from {{ history }} where valid_to is null
) as open_rows on open_rows.customer_id = current_segments.customer_id
where open_rows.segment_id is distinct from current_segments.segment_id;

-- Close the open row of every customer who moved or left.
update {{ history }} set valid_to = :as_of
from pg_temp.customer_segment_history_changes as changed
where changed.has_open_row
    and {{ history }}.customer_id = changed.customer_id
    and {{ history }}.valid_to is null;

-- Open a row for every customer of this run who moved or is new.
insert into {{ history }} (customer_id, segment_id, segment_name, valid_from, valid_to, run_id)
select customer_id, segment_id, segment_name, :as_of, null, run_id
from pg_temp.customer_segment_history_changes
where is_current;
