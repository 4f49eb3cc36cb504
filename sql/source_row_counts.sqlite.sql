-- What the run saw in the source, in one pass without grouping: rows scanned, in the window, before
-- it (lookback), and rejected by reason, each row counted once under its first reason. Same
-- parameters as customer_features.sqlite.sql.
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.sqlite.sql" %}{% endfilter %}
),

classified_rows as (
    select
        case
            when customer_id is null then 'null_customer_id'
            when occurred_jd is null then 'null_occurred_at'
            when occurred_jd >= julianday(:as_of) then 'occurred_at_or_after_as_of'
            when amount_micros is null then 'non_numeric_amount'
        end as rejected_reason,
        {% if lookback %}
        coalesce(occurred_jd < julianday(:window_start), false) as before_window
        {% else %}
        false as before_window
        {% endif %}
    from source_rows
)

{% include "_row_counts.sql" %}
