-- PostgreSQL, after customer_segment_history.postgresql.sql in the same transaction: write the changes
-- it found (pg_temp.customer_segment_history_changes, analyzed). The update closes the open row of every
-- customer who moved or left; the insert opens a row for every customer of this run who moved or is new.
-- They touch different rows (the insert's are new). (Into an empty history, a first run, every customer
-- of the run is new: tasks/load.py sends their rows with COPY instead, and nothing is looked for.)
update {{ history }} set valid_to = :as_of
from pg_temp.customer_segment_history_changes as changed
where changed.has_open_row
    and {{ history }}.customer_id = changed.customer_id
    and {{ history }}.valid_to is null;

insert into {{ history }} (customer_id, segment_id, segment_name, valid_from, valid_to, run_id)
select customer_id, segment_id, segment_name, :as_of, null, run_id
from pg_temp.customer_segment_history_changes
where is_current;
