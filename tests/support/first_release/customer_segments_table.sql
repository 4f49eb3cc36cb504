-- The current assignment of every customer, created if missing. customer_id keeps the source's type
-- (bigint for integer ids, text otherwise). Replaced as a whole inside the run's write transaction.
-- Column types come from a fixed per-dialect map (tasks/load.py).
create table if not exists {{ customer_segments }} (
    customer_id {{ customer_id_type }} primary key,
    segment_id integer not null,
    segment_name text not null,
    recency_days integer,
    frequency integer not null,
    monetary {{ money_type }} not null,
    avg_order_value {{ money_type }},
    tenure_days integer,
    r_score {{ small_integer_type }},
    f_score {{ small_integer_type }},
    m_score {{ small_integer_type }},
    as_of date not null,
    run_id text not null,
    model_version text not null,
    scored_at {{ timestamp_type }} not null
);
