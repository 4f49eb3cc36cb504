-- The customers with a source row changed after the last successful run's watermark (an incremental
-- night also recomputes those whose stored state says rows reach as-of or leave the lookback window:
-- tasks/extract/incremental.py). Identifiers are validated and quoted; the watermark is bound as text
-- and cast back to the change column's type.
select distinct {{ customer_id }} as customer_id
from {{ source }}
where {{ changed_at }} > {{ engine.watermark_bound() }}
    and {{ customer_id }} is not null
