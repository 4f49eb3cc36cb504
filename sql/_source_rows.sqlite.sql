-- The mapped source columns, projected for the feature and count queries (included by both).
select
    {{ customer_id }} as customer_id,
    {% if order_id %}
    {{ order_id }} as order_id,
    {% endif %}
    julianday({{ occurred_at }}) as occurred_jd,
    {% if quantity %}
    case
        when typeof({{ quantity }}) in ('integer', 'real') and typeof({{ unit_price }}) in ('integer', 'real')
        then cast(round({{ quantity }} * {{ unit_price }} * 1000000) as integer)
    end as amount_micros
    {% else %}
    case
        when typeof({{ amount }}) in ('integer', 'real')
        then cast(round({{ amount }} * 1000000) as integer)
    end as amount_micros
    {% endif %}
from {{ source_table }}
{% if one_customer %}
where {{ customer_id }} = :customer_id
{% endif %}
