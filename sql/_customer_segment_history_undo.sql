-- Included by customer_segment_history{,.postgresql}.sql: undo what an earlier run of the same as-of
-- date got wrong (see there).
delete from {{ history }}
where valid_from = :as_of
    and not exists (
        select 1 from {{ customer_segments }} as current_segments
        where current_segments.customer_id = {{ history }}.customer_id
            and current_segments.segment_id = {{ history }}.segment_id
    );

update {{ history }} set valid_to = null
where valid_to = :as_of
    and not exists (
        select 1 from {{ history }} as open_rows
        where open_rows.customer_id = {{ history }}.customer_id and open_rows.valid_to is null
    );
