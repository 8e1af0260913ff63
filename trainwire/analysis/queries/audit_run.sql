-- name: audit_run
-- description: Audit: what the store holds of a run: its interactions and the steps they cover, its
--   train steps, and its reward functions (the keys of the interactions' rewards maps, sorted). No
--   row when the run has neither interactions nor train steps.
-- param: run String = '' -- the run to audit
SELECT *
FROM
(
    SELECT
        (SELECT count() FROM interactions FINAL WHERE run_id = {run:String}) AS interactions,
        (SELECT min(step) FROM interactions FINAL WHERE run_id = {run:String}) AS step_first,
        (SELECT max(step) FROM interactions FINAL WHERE run_id = {run:String}) AS step_last,
        (SELECT count() FROM train_steps FINAL WHERE run_id = {run:String}) AS train_steps,
        (
            SELECT arraySort(groupUniqArrayArray(mapKeys(rewards)))
            FROM interactions FINAL
            WHERE run_id = {run:String}
        ) AS reward_fns
)
WHERE interactions > 0 OR train_steps > 0
