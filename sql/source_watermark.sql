-- The change column's highest value, as text: the next night reads the rows changed after it.
select {{ engine.as_text("max(" ~ changed_at ~ ")") }} as watermark
from {{ source }}
