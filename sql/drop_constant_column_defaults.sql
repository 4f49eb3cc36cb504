-- After the COPY: the loaded table keeps no default (set by tasks/load.py:_set_column_defaults for
-- the run-wide columns, so that COPY did not send them).
alter table {{ table }}
    alter column as_of drop default,
    alter column run_id drop default,
    alter column model_version drop default,
    alter column scored_at drop default
