-- Per-customer RFM features as of a date (definitions: shared/PRODUCT.md), aggregated in PostgreSQL.
-- Only accepted rows are aggregated; source_row_counts.postgresql.sql counts the rejected ones in the
-- same snapshot. The caller runs this after `SET LOCAL TIME ZONE 'UTC'`, so timestamps without a time
-- zone and dates are read as UTC. Identifiers are validated and quoted before rendering; values are
-- bound parameters, named:
--   as_of_ts         as_of 00:00 UTC (rows at or after it are not seen), of the time column's type
--                    (timestamp: the UTC wall time; timestamptz otherwise)
--   window_start_ts  as_of - lookback_days, same type (only when a lookback is set)
--   customer_id      only when scoring one customer (`segments score`)
--   lower_bound, upper_bound  only for a partitioned extract: the customer ids at or above the lower
--                    and below the upper bound (each only when the partition has that bound)
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.postgresql.sql" %}{% endfilter %}
),

window_rows as (
    select *
    from source_rows
    where customer_id is not null
        and occurred_at is not null
        and amount is not null
        and occurred_at < cast(:as_of_ts as {{ time_type }})
        {% if lookback %}
        and occurred_at >= cast(:window_start_ts as {{ time_type }})
        {% endif %}
        {% if lower_bound %}
        and customer_id >= :lower_bound
        {% endif %}
        {% if upper_bound %}
        and customer_id < :upper_bound
        {% endif %}
),

-- An order's net amount is the sum of its lines, its time the latest line's; without an order id
-- every row is one order.
orders as (
    {% if order_id %}
    select customer_id, max(occurred_at) as ordered_at, sum(amount) as net_amount
    from window_rows
    group by customer_id, order_id
    {% else %}
    select customer_id, occurred_at as ordered_at, amount as net_amount
    from window_rows
    {% endif %}
),

customers as (
    select
        customer_id,
        count(*) filter (where net_amount > 0) as frequency,
        sum(net_amount) as monetary,
        max(ordered_at) filter (where net_amount > 0) as last_order_at,
        min(ordered_at) filter (where net_amount > 0) as first_order_at
    from orders
    group by customer_id
)

-- Whole days through date_part, a double precision (extract returns a slower numeric); a double holds
-- an interval's seconds to the microsecond for far more than a century, so the floor is exact.
-- monetary leaves as its exact numeric text; the reader divides it by frequency for avg_order_value.
select
    customer_id,
    frequency,
    monetary,
    cast(floor(date_part('epoch', cast(:as_of_ts as {{ time_type }}) - last_order_at) / 86400) as bigint)
        as recency_days,
    cast(floor(date_part('epoch', cast(:as_of_ts as {{ time_type }}) - first_order_at) / 86400) as bigint)
        as tenure_days
from customers
