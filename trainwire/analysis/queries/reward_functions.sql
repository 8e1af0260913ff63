-- name: reward_functions
-- description: Each reward function per run: 'total' (the interaction's reward) and every key of the
--   rewards map, with count (finite values), mean, population std, min and max. One pass over the
--   table: the map columns are aggregated key by key (sumMap, minMap, maxMap).
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
        arrayConcat([total_sum], mapValues(s)) AS sums,
        arrayConcat([total_sq], mapValues(sq)) AS squares,
        arrayConcat([total_min], mapValues(lo)) AS mins,
        arrayConcat([total_max], mapValues(hi)) AS maxs
    FROM
    (
        SELECT
            toString(run_id) AS run_id,
            countIf(isFinite(reward) = 1) AS total_n,
            sumIf(assumeNotNull(reward), isFinite(reward) = 1) AS total_sum,
            sumIf(assumeNotNull(reward) * assumeNotNull(reward), isFinite(reward) = 1) AS total_sq,
            minIf(reward, isFinite(reward) = 1) AS total_min,
            maxIf(reward, isFinite(reward) = 1) AS total_max,
            sumMap(mapApply((k, v) -> (k, toUInt64(1)), finite)) AS n,
            sumMap(finite) AS s,
            sumMap(mapApply((k, v) -> (k, v * v), finite)) AS sq,
            minMap(finite) AS lo,
            maxMap(finite) AS hi
        FROM
        (
            SELECT run_id, reward, mapFilter((k, v) -> isFinite(v), rewards) AS finite
            FROM interactions FINAL
            WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, interactions.run_id)
        )
        GROUP BY run_id
    )
)
ARRAY JOIN fns AS reward_fn, counts AS count, sums AS total, squares AS total_sq, mins AS min, maxs AS max
WHERE count > 0
ORDER BY run_id, reward_fn != 'total', reward_fn
