-- The columns that hold one value for a whole run (as-of date, run id, model version, scoring time)
-- become defaults of the table being loaded, read from transaction-local settings that the caller
-- set with bound values (set_config), so COPY sends only the per-customer columns: 116 MB -> 46 MB
-- to send and parse at 877k customers. drop_constant_column_defaults.sql removes them after the COPY.
-- The table name is validated and quoted before rendering.
alter table {{ table }}
    alter column as_of set default cast(current_setting('segments.as_of') as date),
    alter column run_id set default current_setting('segments.run_id'),
    alter column model_version set default current_setting('segments.model_version'),
    alter column scored_at set default cast(current_setting('segments.scored_at') as timestamptz)
