-- After a first run's COPY into customer_segment_history (tasks/load.py:_open_first_history): the
-- history keeps no default of the columns the COPY left to them (the as-of date and the run id).
alter table {{ history }}
    alter column valid_from drop default{% if run_id_default %},
    alter column run_id drop default{% endif %}
