-- The mapped source columns, projected for the feature and count queries (included by both; the
-- count query asks for amount_is_null instead of the amount).
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
    {# the counts only ask whether there is an amount: no product of every row #}
    {% if quantity %}
    ({{ quantity }} is null or {{ unit_price }} is null) as amount_is_null
    {% else %}
    {{ amount }} is null as amount_is_null
    {% endif %}
    {% elif quantity %}
    cast({{ quantity }} as numeric) * cast({{ unit_price }} as numeric) as amount
    {% else %}
    cast({{ amount }} as numeric) as amount
    {% endif %}
from {{ source_table }}
{% if one_customer %}
where {{ customer_id }} = :customer_id
{% endif %}
