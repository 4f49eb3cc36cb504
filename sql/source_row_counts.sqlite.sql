-- What the run saw in the source, in one pass without grouping: rows scanned; guest rows (no customer
-- id: guest checkouts, not clustered, not rejected) and the net amount of those in the window; rows
-- in the window, before it (lookback), and rejected by reason, each row counted once under its first
-- reason (time, then as-of, then amount). Same parameters as customer_features.sqlite.sql.
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.sqlite.sql" %}{% endfilter %}
),

classified_rows as (
    select
        case
            when customer_id is null then 'guest'
            when occurred_jd is null then 'null_occurred_at'
            when occurred_jd >= julianday(:as_of) then 'occurred_at_or_after_as_of'
            when amount_micros is null then 'non_numeric_amount'
        end as kind,
        {% if lookback %}
        coalesce(occurred_jd < julianday(:window_start), false) as before_window,
        {% else %}
        false as before_window,
        {% endif %}
        occurred_jd < julianday(:as_of) as before_as_of,
        amount_micros
    from source_rows
)

select
    count(*) as scanned_row_count,
    count(*) filter (where kind is null and not before_window) as window_row_count,
    count(*) filter (where kind is null and before_window) as before_window_count,
    count(*) filter (where kind = 'guest') as guest_row_count,
    coalesce(sum(amount_micros) filter (where kind = 'guest' and before_as_of and not before_window), 0)
        / 1000000.0 as guest_net_amount,
    count(*) filter (where kind = 'null_occurred_at') as null_occurred_at_count,
    count(*) filter (where kind = 'occurred_at_or_after_as_of') as after_as_of_count,
    count(*) filter (where kind = 'non_numeric_amount') as non_numeric_amount_count
from classified_rows
