-- Least privilege for customer-segments on PostgreSQL, for an administrator to review and run once
-- (`segments grants` renders it for the configured source and output schema). The roles must exist:
--   create role segments_job login;   -- the job: reads the source, owns the output schema
--   create role segments_bi login;    -- BI tools: read the segments, nothing else
-- Names are validated and quoted before rendering.

-- The job reads the transactions and nothing else of the source schema.
grant usage on schema {{ source_schema }} to {{ job_role }};
grant select on {{ source_table }} to {{ job_role }};

-- The job owns the output schema, so it can create, replace and lock its tables there.
create schema if not exists {{ output_schema }};
alter schema {{ output_schema }} owner to {{ job_role }};
grant usage on schema {{ output_schema }} to {{ bi_role }};

-- BI reads every output table and view, those that exist and those the job creates later.
grant select on all tables in schema {{ output_schema }} to {{ bi_role }};
alter default privileges for role {{ job_role }} in schema {{ output_schema }} grant select on tables to {{ bi_role }};
