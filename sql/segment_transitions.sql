-- For BI: how many customers moved from which segment to which between the as-of dates of the two
-- latest successful runs (from_* is null for new customers, to_* for customers no longer present).
{% if or_replace %}
create or replace view {{ segment_transitions }} as
{% else %}
create view if not exists {{ segment_transitions }} as
{% endif %}
with run_dates as (
    select as_of, row_number() over (order by as_of desc) as date_rank
    from (select distinct as_of from {{ segment_runs }} where status = 'succeeded') as succeeded_dates
),

-- Each customer's segment on each of the two dates (rank 1: latest, rank 2: previous).
members as (
    select run_dates.date_rank, history.customer_id, history.segment_id, history.segment_name
    from {{ history }} as history
    join run_dates
        on history.valid_from <= run_dates.as_of
        and (history.valid_to is null or history.valid_to > run_dates.as_of)
    where run_dates.date_rank <= 2
),

latest_members as (
    select * from members where date_rank = 1
),

previous_members as (
    select * from members where date_rank = 2
)

select
    (select as_of from run_dates where date_rank = 2) as from_as_of,
    (select as_of from run_dates where date_rank = 1) as to_as_of,
    previous_members.segment_id as from_segment_id,
    previous_members.segment_name as from_segment_name,
    latest_members.segment_id as to_segment_id,
    latest_members.segment_name as to_segment_name,
    count(*) as customers
from previous_members
full outer join latest_members on latest_members.customer_id = previous_members.customer_id
group by
    previous_members.segment_id,
    previous_members.segment_name,
    latest_members.segment_id,
    latest_members.segment_name
