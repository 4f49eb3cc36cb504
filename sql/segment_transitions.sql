-- For BI: how many customers moved from which segment to which between the as-of dates of the two
-- latest successful runs (from_* is null for new customers, to_* for customers no longer present).
--
-- A customer's row of the history that spans both dates is a customer who stayed: those are counted
-- per segment in one pass. Only the rows that end or start between the two dates (found by the
-- valid_to and valid_from indexes) are joined, customer by customer, rather than every customer's
-- segment on one date with their segment on the other.
{% if or_replace %}
create or replace view {{ segment_transitions }} as
{% else %}
create view if not exists {{ segment_transitions }} as
{% endif %}
with run_dates as (
    select as_of, row_number() over (order by as_of desc) as date_rank
    from (select distinct as_of from {{ segment_runs }} where status = 'succeeded') as succeeded_dates
),

dates as (
    select
        (select as_of from run_dates where date_rank = 2) as from_as_of,
        (select as_of from run_dates where date_rank = 1) as to_as_of
),

-- in the same row of the history on both dates
stayed as (
    select history.segment_id, history.segment_name, count(*) as customers
    from {{ history }} as history
    cross join dates
    where history.valid_from <= dates.from_as_of
        and (history.valid_to is null or history.valid_to > dates.to_as_of)
    group by history.segment_id, history.segment_name
),

-- the row a customer had on the earlier date, ended by the later one
left_rows as (
    select history.customer_id, history.segment_id, history.segment_name
    from {{ history }} as history
    cross join dates
    where history.valid_to > dates.from_as_of
        and history.valid_to <= dates.to_as_of
        and history.valid_from <= dates.from_as_of
),

-- the row a customer has on the later date, started after the earlier one (every row, when there is
-- only one date)
entered_rows as (
    select history.customer_id, history.segment_id, history.segment_name
    from {{ history }} as history
    cross join dates
    where history.valid_from <= dates.to_as_of
        and (history.valid_to is null or history.valid_to > dates.to_as_of)
        and (dates.from_as_of is null or history.valid_from > dates.from_as_of)
),

moved as (
    select
        left_rows.segment_id as from_segment_id,
        left_rows.segment_name as from_segment_name,
        entered_rows.segment_id as to_segment_id,
        entered_rows.segment_name as to_segment_name,
        count(*) as customers
    from left_rows
    full outer join entered_rows on entered_rows.customer_id = left_rows.customer_id
    group by left_rows.segment_id, left_rows.segment_name, entered_rows.segment_id, entered_rows.segment_name
),

-- a new row in the same segment and name (a move and a move back between the dates) falls in the group
-- of those who stayed: the sum adds them
counted as (
    select
        segment_id as from_segment_id,
        segment_name as from_segment_name,
        segment_id as to_segment_id,
        segment_name as to_segment_name,
        customers
    from stayed
    union all
    select from_segment_id, from_segment_name, to_segment_id, to_segment_name, customers
    from moved
)

select
    dates.from_as_of,
    dates.to_as_of,
    counted.from_segment_id,
    counted.from_segment_name,
    counted.to_segment_id,
    counted.to_segment_name,
    cast(sum(counted.customers) as bigint) as customers
from counted
cross join dates
group by
    dates.from_as_of,
    dates.to_as_of,
    counted.from_segment_id,
    counted.from_segment_name,
    counted.to_segment_id,
    counted.to_segment_name
