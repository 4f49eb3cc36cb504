-- Per-customer RFM features as of a date (definitions: shared/PRODUCT.md), aggregated in SQLite.
-- Same shape and results as customer_features.postgresql.sql. SQLite has no exact decimal type, so
-- money is summed as integers of micro-units (amounts are rounded to 6 decimals) and a net of exactly
-- zero stays zero. Times are read with julianday(): ISO-8601 text (naive means UTC, an offset is
-- honoured) or a Julian day number; a value it cannot read counts as a null time. Only accepted rows
-- are aggregated; source_row_counts.sqlite.sql counts the rejected ones.
-- Identifiers are validated and quoted before rendering; values are bound parameters, named:
--   as_of            text, 'YYYY-MM-DD 00:00:00' (UTC)
--   window_start     text, as_of - lookback_days (only when a lookback is set)
--   customer_id      only when scoring one customer (`segments score`)
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.sqlite.sql" %}{% endfilter %}
),

window_rows as (
    select *
    from source_rows
    where customer_id is not null
        and occurred_jd is not null
        and amount_micros is not null
        and occurred_jd < julianday(:as_of)
        {% if lookback %}
        and occurred_jd >= julianday(:window_start)
        {% endif %}
),

-- An order's net amount is the sum of its lines, its time the latest line's; without an order id
-- every row is one order.
orders as (
    {% if order_id %}
    select customer_id, max(occurred_jd) as ordered_jd, sum(amount_micros) as net_micros
    from window_rows
    group by customer_id, order_id
    {% else %}
    select customer_id, occurred_jd as ordered_jd, amount_micros as net_micros
    from window_rows
    {% endif %}
),

customers as (
    select
        customer_id,
        count(*) filter (where net_micros > 0) as frequency,
        sum(net_micros) as net_micros,
        max(ordered_jd) filter (where net_micros > 0) as last_order_jd,
        min(ordered_jd) filter (where net_micros > 0) as first_order_jd
    from orders
    group by customer_id
)

-- Times leave as epoch microseconds (to the millisecond, so that float noise in a Julian day cannot
-- move a day boundary); the reader derives recency and tenure at as-of from them. SQLite runs always
-- aggregate in full: every customer here has rows in the window.
select
    customer_id,
    frequency,
    net_micros / 1000000.0 as monetary,
    cast(round((last_order_jd - 2440587.5) * 86400000) as integer) * 1000 as last_order_us,
    cast(round((first_order_jd - 2440587.5) * 86400000) as integer) * 1000 as first_order_us
from customers
