-- Figures of the rows about to be committed (read inside the write transaction), for the output checks
-- in tasks/gates.py: unique non-null ids, every customer with a segment, one run's rows, counts that
-- add up. Names are validated and quoted before rendering; run_id is a bound parameter.
select
    (select count(*) from {{ customer_segments }}) as customers_written,
    (select count(*) from {{ customer_segments }} where customer_id is null) as null_customer_ids,
    (select count(*) - count(distinct customer_id) from {{ customer_segments }}) as duplicate_customer_ids,
    (select count(*) from {{ customer_segments }} where segment_id is null or segment_name is null)
        as customers_without_segment,
    (select count(*) from {{ customer_segments }} where run_id <> :run_id) as rows_of_other_runs,
    (select coalesce(sum(customers), 0) from {{ segment_profiles }} where run_id = :run_id) as customers_in_profiles
