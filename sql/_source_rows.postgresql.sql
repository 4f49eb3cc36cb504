-- The mapped source columns, projected for the feature and count queries (included by both).
select
    {{ customer_id }} as customer_id,
    {% if order_id %}
    {{ order_id }} as order_id,
    {% endif %}
    cast({{ occurred_at }} as timestamptz) as occurred_at,
    {% if quantity %}
    cast({{ quantity }} as numeric) * cast({{ unit_price }} as numeric) as amount
    {% else %}
    cast({{ amount }} as numeric) as amount
    {% endif %}
from {{ source_table }}
{% if one_customer %}
where {{ customer_id }} = :customer_id
{% endif %}
