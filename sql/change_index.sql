-- The index on the change column (PostgreSQL; `segments index` prints it, `--create` runs it): an
-- incremental night finds the rows changed since the last run's watermark through it.
-- Built CONCURRENTLY, so writers to the source are not blocked; names are validated and quoted.
create index concurrently if not exists {{ index_name }}
    on {{ source_table }} ({{ columns }});
