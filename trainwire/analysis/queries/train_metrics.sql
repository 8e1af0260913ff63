-- name: train_metrics
-- description: Training metrics per run and step (the latest train_steps row of a step): epoch, loss,
--   learning_rate, grad_norm, next to the step's interactions and mean reward (NULL when the
--   step has no rewarded interaction; from the per-step aggregates, view interaction_steps).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    t.run_id AS run_id,
    t.step AS step,
    t.epoch AS epoch,
    t.loss AS loss,
    t.learning_rate AS learning_rate,
    t.grad_norm AS grad_norm,
    ifNull(r.interactions, 0) AS interactions,
    r.mean_reward AS mean_reward
FROM
(
    SELECT
        toString(run_id) AS run_id,
        step,
        argMax(epoch, ts) AS epoch,
        argMax(loss, ts) AS loss,
        argMax(learning_rate, ts) AS learning_rate,
        argMax(grad_norm, ts) AS grad_norm
    FROM train_steps FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, train_steps.run_id)
    GROUP BY run_id, step
) AS t
LEFT JOIN
(
    SELECT
        toString(run_id) AS run_id,
        step,
        interactions,
        if(rewarded > 0, reward_sum / rewarded, NULL) AS mean_reward
    FROM interaction_steps(runs = {runs:Array(String)}, reward_fn = 'total')
    WHERE stepped
) AS r ON t.run_id = r.run_id AND t.step = r.step
ORDER BY run_id, step
SETTINGS join_use_nulls = 1
