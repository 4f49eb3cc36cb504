-- Per-customer RFM features as of a date (definitions: shared/PRODUCT.md), aggregated in SQLite.
-- Same shape and results as customer_features.postgresql.sql. SQLite has no exact decimal type, so
-- money is summed as integers of micro-units (amounts are rounded to 6 decimals) and a net of exactly
-- zero stays zero. Times are read with julianday(): ISO-8601 text (naive means UTC, an offset is
-- honoured) or a Julian day number; a value it cannot read counts as a null time.
-- Identifiers are validated and quoted before rendering; values are bound parameters, named:
--   customer_id      only when scoring one customer (`segments score`)
--   as_of            text, 'YYYY-MM-DD 00:00:00' (UTC)
--   window_start     text, as_of - lookback_days (only when a lookback is set)
with source_rows as (
    select
        {{ customer_id }} as customer_id,
        {% if order_id %}
        {{ order_id }} as order_id,
        {% endif %}
        julianday({{ occurred_at }}) as occurred_jd,
        {% if quantity %}
        case
            when typeof({{ quantity }}) in ('integer', 'real') and typeof({{ unit_price }}) in ('integer', 'real')
            then cast(round({{ quantity }} * {{ unit_price }} * 1000000) as integer)
        end as amount_micros
        {% else %}
        case
            when typeof({{ amount }}) in ('integer', 'real')
            then cast(round({{ amount }} * 1000000) as integer)
        end as amount_micros
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
            when occurred_jd is null then 'null_occurred_at'
            when occurred_jd >= julianday(:as_of) then 'occurred_at_or_after_as_of'
            when amount_micros is null then 'non_numeric_amount'
        end as rejected_reason
    from source_rows
),

window_rows as (
    select
        *,
        rejected_reason is null
        {% if lookback %}
        and occurred_jd >= julianday(:window_start)
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
        max(occurred_jd) filter (where in_window) as ordered_jd,
        sum(amount_micros) filter (where in_window) as net_micros,
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
        case when in_window then occurred_jd end as ordered_jd,
        case when in_window then amount_micros end as net_micros,
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
        count(*) filter (where net_micros > 0) as frequency,
        sum(net_micros) as net_micros,
        max(ordered_jd) filter (where net_micros > 0) as last_order_jd,
        min(ordered_jd) filter (where net_micros > 0) as first_order_jd,
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
-- Whole days are counted in integer milliseconds so that float noise cannot move a floor.
select
    'customer' as row_kind,
    customer_id,
    frequency,
    net_micros / 1000000.0 as monetary,
    case when frequency > 0 then net_micros / 1000000.0 / frequency end as avg_order_value,
    cast(round((julianday(:as_of) - last_order_jd) * 86400000) as integer) / 86400000 as recency_days,
    cast(round((julianday(:as_of) - first_order_jd) * 86400000) as integer) / 86400000 as tenure_days,
    null as scanned_row_count,
    null as window_row_count,
    null as null_customer_id_count,
    null as null_occurred_at_count,
    null as after_as_of_count,
    null as non_numeric_amount_count,
    null as before_window_count
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
    coalesce(sum(scanned_row_count), 0),
    coalesce(sum(window_row_count), 0),
    coalesce(sum(null_customer_id_count), 0),
    coalesce(sum(null_occurred_at_count), 0),
    coalesce(sum(after_as_of_count), 0),
    coalesce(sum(non_numeric_amount_count), 0),
    coalesce(sum(before_window_count), 0)
from customers
