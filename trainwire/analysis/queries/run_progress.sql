-- name: run_progress
-- description: How far a run's storing has come, for a page that redraws when it changes: the rows
--   inserted for the run in every event and stats table (redeliveries included: no FINAL, so it
--   stays cheap), the newest insert time and the highest step seen. No row for a run with nothing
--   stored.
-- param: run String = '' -- the run id
SELECT {run:String} AS run_id, sum(n) AS rows, max(last_insert) AS last_insert, max(last_step) AS last_step
FROM
(
    SELECT count() AS n, max(inserted_at) AS last_insert, max(step) AS last_step
    FROM interactions WHERE run_id = {run:String}
    UNION ALL
    SELECT count(), max(inserted_at), toNullable(max(step)) FROM train_steps WHERE run_id = {run:String}
    UNION ALL
    SELECT count(), max(inserted_at), max(step) FROM judge_scores WHERE run_id = {run:String}
    UNION ALL
    SELECT count(), max(inserted_at), max(step) FROM alerts WHERE run_id = {run:String}
    UNION ALL
    SELECT count(), max(inserted_at), max(step_end) FROM reward_stats WHERE run_id = {run:String}
    UNION ALL
    SELECT count(), max(inserted_at), toNullable(max(step)) FROM group_stats WHERE run_id = {run:String}
)
HAVING rows > 0
