-- The stored state of the customers an incremental night does not recompute (PostgreSQL): read in the
-- extract's snapshot, beside the recomputed customers' rows, in the feature query's columns.
select
    state.customer_id,
    state.frequency,
    state.monetary,
    state.last_order_us,
    state.first_order_us,
    state.window_rows,
    state.earliest_row_us,
    state.pending_from_us
from {{ state_table }} as state
where not exists (
    select 1 from pg_temp.changed_customers as changed where changed.customer_id = state.customer_id
)
