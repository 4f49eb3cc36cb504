-- Figures of the rows about to be committed (read inside the write transaction), for the output checks
-- in tasks/load/checks.py: unique non-null ids, every customer with a segment, one run's rows, counts
-- that add up. One pass over customer_segments. Names are validated and quoted before rendering;
-- run_id is a bound parameter.
select
    count(*) as customers_written,
    count(*) filter (where customer_id is null) as null_customer_ids,
    count(*) - count(distinct customer_id) as duplicate_customer_ids,
    count(*) filter (where segment_id is null or segment_name is null) as customers_without_segment,
    count(*) filter (where run_id <> :run_id) as rows_of_other_runs,
    (select coalesce(sum(customers), 0) from {{ segment_profiles }} where run_id = :run_id)
        as customers_in_profiles
from {{ customer_segments }}
