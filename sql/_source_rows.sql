-- The mapped source columns, projected for the feature and count queries (included by both; the
-- count query asks whether there is an amount, and for the amount of guest rows only). `engine` writes
-- what the engines write differently (tasks/extract/dialects.py): the time as the engine compares it,
-- exact money, null where a value is not a number or a time.
-- An incremental run reads only the customers it recomputes (changed_customers, a temporary table of
-- their ids), and counts only the rows changed since the last run's watermark (changed_since).
{% set money = engine.money_product(quantity, unit_price) if quantity else engine.money(amount) %}
select
    {{ customer_id }} as customer_id,
    {% if order_id %}
    {{ order_id }} as order_id,
    {% endif %}
    {{ engine.time(occurred_at) }} as occurred_at,
    {% if amount_is_null %}
    {{ engine.money_is_null(money, [quantity, unit_price] if quantity else [amount]) }} as amount_is_null,
    case when {{ customer_id }} is null then {{ money }} end as guest_amount
    {% else %}
    {{ money }} as amount
    {% endif %}
from {{ source }}
{% if one_customer %}
where {{ customer_id }} = :customer_id
{% elif changed_customers %}
where {{ engine.in_ids(customer_id, changed_customers) }}
{% elif changed_since %}
where {{ changed_at }} > {{ engine.watermark_bound() }}
{% endif %}
