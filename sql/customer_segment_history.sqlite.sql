-- Bring customer_segment_history in line with the run's rows (customer_segments_incoming, as
-- customer_segments) for its as-of date (bound as as_of). Runs inside the write transaction.
-- Idempotent: a re-run of the same date undoes what the earlier run of that date got wrong, and only
-- that: a row it opened for a customer who is now elsewhere is deleted and the row it closed reopened
-- (then closed again below if the customer moved anyway). Rows it got right stay, so a re-run
-- rewrites only the changes.
{% include "_customer_segment_history_undo.sql" %}

-- Close the current row of every customer whose segment changed or who is not in this run.
update {{ history }} set valid_to = :as_of
where valid_to is null
    and not exists (
        select 1 from {{ customer_segments }} as current_segments
        where current_segments.customer_id = {{ history }}.customer_id
            and current_segments.segment_id = {{ history }}.segment_id
    );

-- Open a row for every customer of this run who has no current one.
insert into {{ history }} (customer_id, segment_id, segment_name, valid_from, valid_to, run_id)
select current_segments.customer_id, current_segments.segment_id, current_segments.segment_name, :as_of, null,
    current_segments.run_id
from {{ customer_segments }} as current_segments
where not exists (
    select 1 from {{ history }} as open_rows
    where open_rows.customer_id = current_segments.customer_id and open_rows.valid_to is null
);
