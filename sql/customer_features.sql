-- Per-customer RFM features as of a date (definitions: shared/PRODUCT.md), aggregated where the
-- transactions are: PostgreSQL, SQLite, DuckDB or Spark; `engine` writes the few expressions they
-- write differently (tasks/extract/dialects.py). Only accepted rows are aggregated;
-- source_row_counts.sql counts the rejected ones in the same snapshot. Times are read as UTC.
-- Identifiers are validated and quoted before rendering; values are bound parameters, named:
--   as_of            as-of 00:00 UTC (rows at or after it are not seen)
--   window_start     as-of - lookback_days (only when a lookback is set)
--   customer_id      only when scoring one customer (`segments score`)
-- Times leave as epoch microseconds; the reader derives recency and tenure at as-of from them. With
-- `pending` (incremental runs keep per-customer state) rows at or after as-of are read too: a customer
-- with only those is returned with window_rows 0, and pending_from_us says when they start to count.
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.sql" %}{% endfilter %}
),

accepted_rows as (
    select *, occurred_at < {{ engine.bound("as_of") }} as in_window
    from source_rows
    where customer_id is not null
        and occurred_at is not null
        and amount is not null
        {% if not pending %}
        and occurred_at < {{ engine.bound("as_of") }}
        {% endif %}
        {% if lookback %}
        and occurred_at >= {{ engine.bound("window_start") }}
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

select
    customer_id,
    frequency,
    {{ engine.money_text("monetary") }} as monetary,
    {{ engine.epoch_us("last_order_at") }} as last_order_us,
    {{ engine.epoch_us("first_order_at") }} as first_order_us,
    window_rows,
    {{ engine.epoch_us("earliest_at") }} as earliest_row_us,
    {{ engine.epoch_us("pending_at") }} as pending_from_us
from customers
