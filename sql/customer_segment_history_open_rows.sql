-- Every customer's open history row with the row it followed (their previous segment), in the columns
-- of customer_segments: what a run compares its rows with where customer_segments does not follow the
-- history (after a re-run of a date undid that date, or after a backfill run left the history as it was).
select
    open_rows.customer_id,
    open_rows.segment_id,
    open_rows.segment_name,
    earlier.segment_id as previous_segment_id,
    earlier.segment_name as previous_segment_name,
    open_rows.valid_from as segment_since
from {{ history }} as open_rows
left join {{ history }} as earlier
    on earlier.customer_id = open_rows.customer_id
    and earlier.valid_to = open_rows.valid_from
where open_rows.valid_to is null
