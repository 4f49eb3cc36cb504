-- Figures of the rows about to be committed (read inside the write transaction), for the output checks
-- in tasks/gates.py: unique non-null ids, every customer with a segment, one run's rows, counts that
-- add up. One pass over customer_segments (five subqueries each scanning it cost 0.55 s at 877k
-- customers). Names are validated and quoted before rendering; run_id is a bound parameter.
-- Duplicate ids are counted only where no primary key rules them out (check_duplicates): the table
-- swapped in by the PostgreSQL write has just had its key built, and counting distinct ids again
-- cost 0.2 s of the 0.3 s at 877k customers.
select
    count(*) as customers_written,
    count(*) filter (where customer_id is null) as null_customer_ids,
    {% if check_duplicates %}
    count(*) - count(distinct customer_id) as duplicate_customer_ids,
    {% else %}
    0 as duplicate_customer_ids,
    {% endif %}
    count(*) filter (where segment_id is null or segment_name is null) as customers_without_segment,
    count(*) filter (where run_id <> :run_id) as rows_of_other_runs,
    (select coalesce(sum(customers), 0) from {{ segment_profiles }} where run_id = :run_id)
        as customers_in_profiles
from {{ customer_segments }}
