-- customer_segments filled from the run's incoming rows, once the history follows them: each
-- customer's previous segment (the history row that ended where the current one began) and the date
-- they entered the current segment (the current row's start). Where the history does not follow this
-- run (an as-of date older than its latest change, which leaves it as it was) both stay empty.
insert into {{ customer_segments }} ({{ columns }}, previous_segment_id, previous_segment_name, segment_since)
select
    {{ incoming_columns }},
    previous_rows.segment_id,
    previous_rows.segment_name,
    current_rows.valid_from
from {{ incoming }} as incoming
left join {{ history }} as current_rows
    on current_rows.customer_id = incoming.customer_id
    and current_rows.valid_to is null
    and current_rows.segment_id = incoming.segment_id
left join {{ history }} as previous_rows
    on previous_rows.customer_id = current_rows.customer_id
    and previous_rows.valid_to = current_rows.valid_from
