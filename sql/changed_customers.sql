-- The customers an incremental night recomputes (PostgreSQL), kept in a temporary table that goes with
-- the extract's transaction: those with a source row changed after the last successful run's
-- watermark, those with rows dated at or after that run's as-of which now fall before this one's
-- (pending_from_us), and, with a lookback, those with a row leaving the window (earliest_row_us).
-- Identifiers are validated and quoted; values are bound: watermark (text, cast to the change
-- column's type), as_of_us and window_start_us (epoch microseconds).
create temporary table changed_customers on commit drop as
select {{ customer_id }} as customer_id
from {{ source_table }}
where {{ changed_at }} > cast(:watermark as {{ changed_type }})
    and {{ customer_id }} is not null
union
select customer_id
from {{ state_table }}
where pending_from_us < :as_of_us
{% if lookback %}
    or earliest_row_us < :window_start_us
{% endif %}
