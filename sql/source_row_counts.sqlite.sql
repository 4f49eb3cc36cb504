-- What the run saw in the source, in one pass without grouping: rows scanned, in the window, before
-- it (lookback), and rejected by reason, each row counted once under its first reason. Same
-- parameters as customer_features.sqlite.sql.
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.sqlite.sql" %}{% endfilter %}
),

classified_rows as (
    select
        occurred_jd,
        case
            when customer_id is null then 'null_customer_id'
            when occurred_jd is null then 'null_occurred_at'
            when occurred_jd >= julianday(:as_of) then 'occurred_at_or_after_as_of'
            when amount_micros is null then 'non_numeric_amount'
        end as rejected_reason
    from source_rows
)

select
    count(*) as scanned_row_count,
    count(*) filter (where rejected_reason is null
        {% if lookback %}and occurred_jd >= julianday(:window_start){% endif %}) as window_row_count,
    {% if lookback %}
    count(*) filter (where rejected_reason is null and occurred_jd < julianday(:window_start))
    {% else %}
    0
    {% endif %}
        as before_window_count,
    count(*) filter (where rejected_reason = 'null_customer_id') as null_customer_id_count,
    count(*) filter (where rejected_reason = 'null_occurred_at') as null_occurred_at_count,
    count(*) filter (where rejected_reason = 'occurred_at_or_after_as_of') as after_as_of_count,
    count(*) filter (where rejected_reason = 'non_numeric_amount') as non_numeric_amount_count
from classified_rows
