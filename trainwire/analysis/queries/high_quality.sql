-- name: high_quality
-- description: High-quality answers: per run (or over all selected runs) how many interactions have a
--   finite reward (rewarded), how many of them reach the threshold (reward >= threshold) and
--   their share of the rewarded ones.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: threshold Float64 = 0.8 -- rewards at or above this count as high quality
-- param: by_run Bool = true -- one row per run; false: one row ('*') over all selected runs
SELECT
    run AS run_id,
    {threshold:Float64} AS threshold,
    count() AS interactions,
    count(r) AS rewarded,
    countIf(r >= {threshold:Float64}) AS high_quality,
    if(rewarded > 0, high_quality / rewarded, NULL) AS high_quality_share
FROM
(
    SELECT
        if({by_run:Bool}, toString(run_id), '*') AS run,
        if({reward_fn:String} = 'total', reward,
           if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw,
        if(isFinite(raw), raw, NULL) AS r
    FROM interactions FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
)
GROUP BY run
ORDER BY run
