-- name: train_metrics
-- description: Training metrics per run and step (the latest train_steps row of a step): epoch, loss,
--   learning_rate, grad_norm, next to the step's interactions and mean reward (NULL when the
--   step has no rewarded interaction; from the per-step aggregates, view interaction_step_stats).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    toString(run_id) AS run_id,
    step,
    argMaxIf(epoch, ts, trained) AS epoch,
    argMaxIf(loss, ts, trained) AS loss,
    argMaxIf(learning_rate, ts, trained) AS learning_rate,
    argMaxIf(grad_norm, ts, trained) AS grad_norm,
    sum(interactions) AS interactions,
    if(sum(rewarded) > 0, sum(reward_sum) / sum(rewarded), NULL) AS mean_reward
FROM
(
    -- the train steps and, beside them, the interactions of the same steps: grouped together
    -- instead of joined
    SELECT run_id, step, true AS trained, ts, epoch, loss, learning_rate, grad_norm,
        toUInt64(0) AS interactions, toUInt64(0) AS rewarded, 0. AS reward_sum
    FROM train_steps FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, train_steps.run_id)
    UNION ALL
    SELECT run_id, step, false, toDateTime64(0, 6, 'UTC'), NULL, NULL, NULL, NULL, interactions, rewarded, reward_sum
    FROM interaction_step_stats(runs = {runs:Array(String)}, reward_fn = 'total')
    WHERE stepped
)
GROUP BY run_id, step
HAVING countIf(trained) > 0
ORDER BY run_id, step
