-- Per-customer RFM features as of a date (definitions: shared/PRODUCT.md), aggregated in PostgreSQL.
-- One scan of the source yields both the features and the counts of rejected rows by reason.
-- The caller runs this after `SET LOCAL TIME ZONE 'UTC'`, so timestamps without a time zone and dates
-- are read as UTC. Identifiers are validated and quoted before rendering; values are bound parameters, named:
--   as_of_ts         timestamptz, as_of 00:00 UTC (rows at or after it are rejected)
--   window_start_ts  timestamptz, as_of - lookback_days (only when a lookback is set)
with source_rows as (
    select
        {{ customer_id }} as customer_id,
        {% if order_id %}
        {{ order_id }} as order_id,
        {% endif %}
        cast({{ occurred_at }} as timestamptz) as occurred_at,
        {% if quantity %}
        cast({{ quantity }} as numeric) * cast({{ unit_price }} as numeric) as amount
        {% else %}
        cast({{ amount }} as numeric) as amount
        {% endif %}
    from {{ source_table }}
    {% if one_customer %}
    where {{ customer_id }} = :customer_id
    {% endif %}
),

classified_rows as (
    select
        *,
        case
            when customer_id is null then 'null_customer_id'
            when occurred_at is null then 'null_occurred_at'
            when occurred_at >= cast(:as_of_ts as timestamptz) then 'occurred_at_or_after_as_of'
            when amount is null then 'non_numeric_amount'
        end as rejected_reason
    from source_rows
),

window_rows as (
    select
        *,
        rejected_reason is null
        {% if lookback %}
        and occurred_at >= cast(:window_start_ts as timestamptz)
        {% endif %}
        as in_window
    from classified_rows
),

-- An order's net amount is the sum of its lines, its time the latest line's; without an order id
-- every row is one order.
orders as (
    select
        customer_id,
        {% if order_id %}
        max(occurred_at) filter (where in_window) as ordered_at,
        sum(amount) filter (where in_window) as net_amount,
        count(*) filter (where in_window) as window_row_count,
        count(*) as scanned_row_count,
        count(*) filter (where rejected_reason = 'null_customer_id') as null_customer_id_count,
        count(*) filter (where rejected_reason = 'null_occurred_at') as null_occurred_at_count,
        count(*) filter (where rejected_reason = 'occurred_at_or_after_as_of') as after_as_of_count,
        count(*) filter (where rejected_reason = 'non_numeric_amount') as non_numeric_amount_count,
        count(*) filter (where rejected_reason is null and not in_window) as before_window_count
    from window_rows
    group by customer_id, order_id
        {% else %}
        case when in_window then occurred_at end as ordered_at,
        case when in_window then amount end as net_amount,
        case when in_window then 1 else 0 end as window_row_count,
        1 as scanned_row_count,
        case when rejected_reason = 'null_customer_id' then 1 else 0 end as null_customer_id_count,
        case when rejected_reason = 'null_occurred_at' then 1 else 0 end as null_occurred_at_count,
        case when rejected_reason = 'occurred_at_or_after_as_of' then 1 else 0 end as after_as_of_count,
        case when rejected_reason = 'non_numeric_amount' then 1 else 0 end as non_numeric_amount_count,
        case when rejected_reason is null and not in_window then 1 else 0 end as before_window_count
    from window_rows
        {% endif %}
),

customers as (
    select
        customer_id,
        count(*) filter (where net_amount > 0) as frequency,
        sum(net_amount) as monetary,
        max(ordered_at) filter (where net_amount > 0) as last_order_at,
        min(ordered_at) filter (where net_amount > 0) as first_order_at,
        sum(window_row_count) as window_row_count,
        sum(scanned_row_count) as scanned_row_count,
        sum(null_customer_id_count) as null_customer_id_count,
        sum(null_occurred_at_count) as null_occurred_at_count,
        sum(after_as_of_count) as after_as_of_count,
        sum(non_numeric_amount_count) as non_numeric_amount_count,
        sum(before_window_count) as before_window_count
    from orders
    group by customer_id
)

-- One row per customer with rows in the window, then one row of totals for the run record.
select
    'customer' as row_kind,
    customer_id,
    cast(frequency as bigint) as frequency,
    cast(monetary as double precision) as monetary,
    cast(case when frequency > 0 then monetary / frequency end as double precision) as avg_order_value,
    cast(floor(extract(epoch from cast(:as_of_ts as timestamptz) - last_order_at) / 86400) as bigint)
        as recency_days,
    cast(floor(extract(epoch from cast(:as_of_ts as timestamptz) - first_order_at) / 86400) as bigint)
        as tenure_days,
    cast(null as bigint) as scanned_row_count,
    cast(null as bigint) as window_row_count,
    cast(null as bigint) as null_customer_id_count,
    cast(null as bigint) as null_occurred_at_count,
    cast(null as bigint) as after_as_of_count,
    cast(null as bigint) as non_numeric_amount_count,
    cast(null as bigint) as before_window_count
from customers
where window_row_count > 0

union all

select
    'totals',
    null,
    null,
    null,
    null,
    null,
    null,
    cast(coalesce(sum(scanned_row_count), 0) as bigint),
    cast(coalesce(sum(window_row_count), 0) as bigint),
    cast(coalesce(sum(null_customer_id_count), 0) as bigint),
    cast(coalesce(sum(null_occurred_at_count), 0) as bigint),
    cast(coalesce(sum(after_as_of_count), 0) as bigint),
    cast(coalesce(sum(non_numeric_amount_count), 0) as bigint),
    cast(coalesce(sum(before_window_count), 0) as bigint)
from customers
