-- The covering index for the extract on PostgreSQL (`segments index` prints it; `--create` runs it).
-- Key order matters: customer id, then order id, so that PostgreSQL can aggregate orders and then
-- customers while it streams an index-only scan in key order, with no sort and no hash spilling to
-- disk; occurred at and amount make it covering.
-- Built CONCURRENTLY, so writers to the source are not blocked; names are validated and quoted.
create index concurrently if not exists {{ index_name }}
    on {{ source_table }} ({{ columns }});
