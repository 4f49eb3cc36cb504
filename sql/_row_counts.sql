-- The counts of source_row_counts.<dialect>.sql, over classified_rows (rejected_reason, before_window).
select
    count(*) as scanned_row_count,
    count(*) filter (where rejected_reason is null and not before_window) as window_row_count,
    count(*) filter (where rejected_reason is null and before_window) as before_window_count,
    count(*) filter (where rejected_reason = 'null_customer_id') as null_customer_id_count,
    count(*) filter (where rejected_reason = 'null_occurred_at') as null_occurred_at_count,
    count(*) filter (where rejected_reason = 'occurred_at_or_after_as_of') as after_as_of_count,
    count(*) filter (where rejected_reason = 'non_numeric_amount') as non_numeric_amount_count
from classified_rows
