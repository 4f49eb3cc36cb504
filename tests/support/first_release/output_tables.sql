-- Run records and segment profiles, created if missing (idempotent). Names are validated and quoted,
-- and column types come from a fixed per-dialect map (tasks/load.py), before rendering. SQLite has no
-- schemas (the tables live in the database file); it stores times as ISO-8601 text and JSON as text.
{% if schema %}
create schema if not exists {{ schema }};
{% endif %}

create table if not exists {{ segment_runs }} (
    run_id text primary key,
    flow_run_id text,
    as_of date not null,
    started_at {{ timestamp_type }} not null,
    finished_at {{ timestamp_type }},
    status text not null check (status in ('running', 'succeeded', 'failed', 'superseded')),
    model_action text,
    model_reason text,
    model_version text,
    n_clusters integer,
    k_reason text,
    rows_scanned bigint,
    rows_in_window bigint,
    rows_before_window bigint,
    rows_rejected bigint,
    rejected_by_reason {{ json_type }},
    customers bigint,
    customers_clustered bigint,
    customers_no_net_purchases bigint,
    inertia {{ float_type }},
    silhouette {{ float_type }},
    davies_bouldin {{ float_type }},
    calinski_harabasz {{ float_type }},
    elbow {{ json_type }},
    model {{ json_type }},
    settings {{ json_type }},
    error text
);

create index if not exists segment_runs_as_of_idx on {{ segment_runs }} (as_of, status);

create table if not exists {{ segment_profiles }} (
    run_id text not null references {{ segment_runs }} (run_id) on delete cascade,
    as_of date not null,
    segment_id integer not null,
    segment_name text not null,
    description text not null,
    recommended_action text not null,
    customers bigint not null,
    share {{ float_type }} not null,
    mean_recency_days {{ float_type }},
    median_recency_days {{ float_type }},
    mean_frequency {{ float_type }},
    median_frequency {{ float_type }},
    mean_monetary {{ float_type }},
    median_monetary {{ float_type }},
    mean_avg_order_value {{ float_type }},
    median_avg_order_value {{ float_type }},
    mean_tenure_days {{ float_type }},
    median_tenure_days {{ float_type }},
    mean_r_score {{ float_type }},
    mean_f_score {{ float_type }},
    mean_m_score {{ float_type }},
    centroid {{ json_type }},
    primary key (run_id, segment_id)
);

create index if not exists segment_profiles_as_of_idx on {{ segment_profiles }} (as_of);
