-- The mapped source columns, projected for the feature and count queries (included by both; the
-- count query asks whether there is an amount, and for the amount of guest rows only).
-- An incremental run reads only the customers it recomputes (changed_customers, a temporary table of
-- their ids), and counts only the rows changed since the last run's watermark (changed_since). The ids
-- go in as an array so that each customer is looked up through the index on the customer id column
-- (with `in (select ...)` the planner joins them with a scan of the whole source instead).
-- A timestamp or timestamptz column is read as it is and compared with bounds of its own type (the
-- bound parameters are cast to the column's type, not every row to another). A date column is cast to
-- timestamptz (midnight UTC).
select
    {{ customer_id }} as customer_id,
    {% if order_id %}
    {{ order_id }} as order_id,
    {% endif %}
    {% if cast_occurred_at %}
    cast({{ occurred_at }} as timestamptz) as occurred_at,
    {% else %}
    {{ occurred_at }} as occurred_at,
    {% endif %}
    {% if amount_is_null %}
    {# the counts ask whether there is an amount; only a guest row's amount is computed #}
    {% if quantity %}
    ({{ quantity }} is null or {{ unit_price }} is null) as amount_is_null,
    case when {{ customer_id }} is null then cast({{ quantity }} as numeric) * cast({{ unit_price }} as numeric) end
        as guest_amount
    {% else %}
    {{ amount }} is null as amount_is_null,
    case when {{ customer_id }} is null then cast({{ amount }} as numeric) end as guest_amount
    {% endif %}
    {% elif quantity %}
    cast({{ quantity }} as numeric) * cast({{ unit_price }} as numeric) as amount
    {% else %}
    cast({{ amount }} as numeric) as amount
    {% endif %}
from {{ source_table }}
{% if one_customer %}
where {{ customer_id }} = :customer_id
{% elif changed_customers %}
where {{ customer_id }} = any(array(select customer_id from {{ changed_customers }}))
{% elif changed_since %}
where {{ changed_at }} > cast(:watermark as {{ changed_type }})
{% endif %}
