-- What the run saw in the source, in one pass without grouping: rows scanned; guest rows (no customer
-- id: guest checkouts, not clustered, not rejected) and the net amount of those in the window; rows
-- in the window, before it (lookback), and rejected by reason, each row counted once under its first
-- reason (time, then as-of, then amount). Same snapshot, engine and parameters as
-- customer_features.sql.
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.sql" %}{% endfilter %}
),

counted as (
    select
        count(*) as scanned_row_count,
        count(*) filter (where customer_id is null) as guest_row_count,
        coalesce(sum(guest_amount) filter (
            where occurred_at < {{ engine.bound("as_of") }}
            {% if lookback %}
                and occurred_at >= {{ engine.bound("window_start") }}
            {% endif %}
        ), 0) as guest_net_amount,
        count(*) filter (where customer_id is not null and occurred_at is null) as null_occurred_at_count,
        count(*) filter (
            where customer_id is not null and occurred_at >= {{ engine.bound("as_of") }}
        ) as after_as_of_count,
        count(*) filter (
            where customer_id is not null and occurred_at < {{ engine.bound("as_of") }} and amount_is_null
        ) as non_numeric_amount_count,
        {% if lookback %}
        count(*) filter (
            where customer_id is not null
                and occurred_at < {{ engine.bound("window_start") }}
                and not amount_is_null
        ) as before_window_count
        {% else %}
        0 as before_window_count
        {% endif %}
    from source_rows
)

select
    scanned_row_count,
    scanned_row_count - guest_row_count - null_occurred_at_count - after_as_of_count
        - non_numeric_amount_count - before_window_count as window_row_count,
    before_window_count,
    guest_row_count,
    {{ engine.money_text("guest_net_amount") }} as guest_net_amount,
    null_occurred_at_count,
    after_as_of_count,
    non_numeric_amount_count
from counted
