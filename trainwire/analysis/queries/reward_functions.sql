-- name: reward_functions
-- description: Each reward function per run: 'total' (the interaction's reward) and every key of the
--   rewards map, with count (finite values), mean, population std, min and max. Read from the
--   per-step aggregates (view interaction_step_rows, migration 0004).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    run_id,
    reward_fn,
    count,
    if(count > 0, total / count, NULL) AS mean,
    if(count > 0, sqrt(greatest(total_sq / count - pow(total / count, 2), 0)), NULL) AS std,
    min,
    max
FROM
(
    SELECT
        run_id,
        arrayConcat(['total'], mapKeys(n)) AS fns,
        arrayConcat([total_n], mapValues(n)) AS counts,
        arrayConcat([total_sum], arrayMap(k -> s[k], mapKeys(n))) AS sums,
        arrayConcat([total_sq], arrayMap(k -> sq[k], mapKeys(n))) AS squares,
        arrayConcat([total_min], arrayMap(k -> lo[k], mapKeys(n))) AS mins,
        arrayConcat([total_max], arrayMap(k -> hi[k], mapKeys(n))) AS maxs
    FROM
    (
        SELECT
            toString(run_id) AS run_id,
            sum(rewarded) AS total_n,
            sum(reward_sum) AS total_sum,
            sum(reward_sq) AS total_sq,
            min(reward_min) AS total_min,
            max(reward_max) AS total_max,
            sumMap(fn_rewarded) AS n,
            sumMap(fn_sum) AS s,
            sumMap(fn_sq) AS sq,
            minMap(fn_min) AS lo,
            maxMap(fn_max) AS hi
        FROM interaction_step_rows(runs = {runs:Array(String)})
        GROUP BY run_id
    )
)
ARRAY JOIN fns AS reward_fn, counts AS count, sums AS total, squares AS total_sq, mins AS min, maxs AS max
WHERE count > 0
ORDER BY run_id, reward_fn != 'total', reward_fn
