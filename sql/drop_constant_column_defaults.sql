-- After the COPY: the loaded table keeps no default (see constant_column_defaults.sql).
alter table {{ table }}
    alter column as_of drop default,
    alter column run_id drop default,
    alter column model_version drop default,
    alter column scored_at drop default
