-- What the run saw in the source, in one pass without grouping: rows scanned, in the window, before
-- it (lookback), and rejected by reason, each row counted once under its first reason. Same snapshot
-- and parameters as customer_features.postgresql.sql.
with source_rows as (
    {% filter indent(4) %}{% include "_source_rows.postgresql.sql" %}{% endfilter %}
),

classified_rows as (
    select
        case
            when customer_id is null then 'null_customer_id'
            when occurred_at is null then 'null_occurred_at'
            when occurred_at >= cast(:as_of_ts as {{ time_type }}) then 'occurred_at_or_after_as_of'
            when amount is null then 'non_numeric_amount'
        end as rejected_reason,
        {% if lookback %}
        coalesce(occurred_at < cast(:window_start_ts as {{ time_type }}), false) as before_window
        {% else %}
        false as before_window
        {% endif %}
    from source_rows
)

{% include "_row_counts.sql" %}
