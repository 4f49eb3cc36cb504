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
-- Times leave as epoch microseconds; the reader derives recency and tenure at as-of from them. With
-- `pending` (incremental runs keep per-customer state) rows at or after as-of are read too: a customer
-- with only those is returned with window_rows 0, and pending_from_us says when they start to count.
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.postgresql.sql" %}{% endfilter %}
),

accepted_rows as (
    select *, occurred_at < cast(:as_of_ts as {{ time_type }}) as in_window
    from source_rows
    where customer_id is not null
        and occurred_at is not null
        and amount is not null
        {% if not pending %}
        and occurred_at < cast(:as_of_ts as {{ time_type }})
        {% endif %}
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

-- An order's net amount is the sum of its lines in the window, its time the latest such line's;
-- without an order id every row is one order.
orders as (
    {% if order_id %}
    select
        customer_id,
        max(occurred_at) filter (where in_window) as ordered_at,
        sum(amount) filter (where in_window) as net_amount,
        count(*) filter (where in_window) as window_rows,
        min(occurred_at) filter (where in_window) as earliest_at,
        min(occurred_at) filter (where not in_window) as pending_at
    from accepted_rows
    group by customer_id, order_id
    {% else %}
    select
        customer_id,
        case when in_window then occurred_at end as ordered_at,
        case when in_window then amount end as net_amount,
        case when in_window then 1 else 0 end as window_rows,
        case when in_window then occurred_at end as earliest_at,
        case when not in_window then occurred_at end as pending_at
    from accepted_rows
    {% endif %}
),

customers as (
    select
        customer_id,
        count(*) filter (where net_amount > 0) as frequency,
        sum(net_amount) as monetary,
        max(ordered_at) filter (where net_amount > 0) as last_order_at,
        min(ordered_at) filter (where net_amount > 0) as first_order_at,
        sum(window_rows) as window_rows,
        min(earliest_at) as earliest_at,
        min(pending_at) as pending_at
    from orders
    group by customer_id
)

-- Epoch seconds through date_part, a double precision (extract returns a slower numeric); a double
-- holds today's epoch to a fraction of a microsecond, so the rounding is exact. monetary leaves as its
-- exact numeric text.
select
    customer_id,
    frequency,
    monetary,
    cast(round(date_part('epoch', last_order_at) * 1000000) as bigint) as last_order_us,
    cast(round(date_part('epoch', first_order_at) * 1000000) as bigint) as first_order_us,
    window_rows,
    cast(round(date_part('epoch', earliest_at) * 1000000) as bigint) as earliest_row_us,
    cast(round(date_part('epoch', pending_at) * 1000000) as bigint) as pending_from_us
from customers
