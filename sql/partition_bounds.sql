-- Customer ids that cut the source into ranges of about equal rows, for a partitioned extract
-- (tasks/partitions.py): the quantiles :fractions of the id, over a block sample of :sample_percent
-- of a large table (TABLESAMPLE SYSTEM reads only those pages), over a row sample of a large view
-- (:row_fraction of its rows, drawn as they are read: the view is read whole, but only the sample is
-- sorted), or over every row. Identifiers are validated and quoted before rendering; values are
-- bound parameters.
select percentile_disc(cast(:fractions as double precision[])) within group (order by {{ customer_id }})
from {{ source_table }}
{% if sample %}
    tablesample system (cast(:sample_percent as real))
{% endif %}
where {{ customer_id }} is not null
{% if row_sample %}
    and random() < :row_fraction
{% endif %}
