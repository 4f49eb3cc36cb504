-- The index named like the covering index in the source table's schema, if there is one (PostgreSQL):
-- the table it is on, whether the planner may use it (a CREATE INDEX CONCURRENTLY that failed or was
-- interrupted leaves its index behind, invalid: kept up to date by every write, never read), its key
-- columns in order, whether it is a plain index (not unique, partial or on expressions), and whether a
-- build of it is running now. Values are bound: the source as text cast to regclass, the index's name.
select c.oid::regclass::text as index_name,
       i.indrelid = cast(:source_table as regclass) as on_source,
       i.indrelid::regclass::text as table_name,
       i.indisvalid and i.indisready as usable,
       array(
           select a.attname
           from unnest(i.indkey::int2[]) with ordinality as key (attnum, position)
           join pg_attribute a on a.attrelid = i.indrelid and a.attnum = key.attnum
           order by key.position
       ) as columns,
       not i.indisunique and i.indpred is null and i.indexprs is null as plain,
       (select p.pid from pg_stat_progress_create_index p where p.index_relid = c.oid limit 1) as building_pid
from pg_class c
join pg_index i on i.indexrelid = c.oid
where c.relname = :index_name
  and c.relnamespace = (select t.relnamespace from pg_class t where t.oid = cast(:source_table as regclass))
