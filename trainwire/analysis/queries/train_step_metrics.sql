-- name: train_step_metrics
-- description: Every number the trainer logged per run and step, one row per metric (loss,
--   learning_rate, grad_norm, epoch and each key of metrics, such as kl, entropy or
--   completions/mean_length), from the latest train_steps row of the step; missing values are left
--   out.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT run_id, metric, step, value
FROM
(
    SELECT
        toString(run_id) AS run_id,
        step,
        argMax((loss, learning_rate, grad_norm, epoch, metrics), ts) AS latest
    FROM train_steps FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, train_steps.run_id)
    GROUP BY run_id, step
)
ARRAY JOIN
    arrayConcat(['loss', 'learning_rate', 'grad_norm', 'epoch'], mapKeys(latest.5)) AS metric,
    arrayConcat([latest.1, latest.2, latest.3, latest.4], arrayMap(v -> toNullable(v), mapValues(latest.5))) AS value
WHERE value IS NOT NULL
ORDER BY run_id, metric, step
