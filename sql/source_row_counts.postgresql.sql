-- What the run saw in the source, in one pass without grouping: rows scanned, in the window, before
-- it (lookback), and rejected by reason, each row counted once under its first reason (customer id,
-- then time, then as-of, then amount). Same snapshot and parameters as customer_features.postgresql.sql.
-- Each count tests nulls and compares times directly, rather than classifying every row into a text
-- reason first.
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.postgresql.sql" %}{% endfilter %}
),

counted as (
    select
        count(*) as scanned_row_count,
        count(*) filter (where customer_id is null) as null_customer_id_count,
        count(*) filter (where customer_id is not null and occurred_at is null) as null_occurred_at_count,
        count(*) filter (
            where customer_id is not null and occurred_at >= cast(:as_of_ts as {{ time_type }})
        ) as after_as_of_count,
        count(*) filter (
            where customer_id is not null and occurred_at < cast(:as_of_ts as {{ time_type }}) and amount_is_null
        ) as non_numeric_amount_count,
        {% if lookback %}
        count(*) filter (
            where customer_id is not null
                and occurred_at < cast(:window_start_ts as {{ time_type }})
                and not amount_is_null
        ) as before_window_count
        {% else %}
        0 as before_window_count
        {% endif %}
    from source_rows
)

select
    scanned_row_count,
    scanned_row_count - null_customer_id_count - null_occurred_at_count - after_as_of_count
        - non_numeric_amount_count - before_window_count as window_row_count,
    before_window_count,
    null_customer_id_count,
    null_occurred_at_count,
    after_as_of_count,
    non_numeric_amount_count
from counted
