-- name: reward_summary
-- description: Reward distribution per run (runs side by side) or over all selected runs: interactions,
--   rewarded (with a finite reward), mean, population std, min, p10, p25, median, p75, p90, max.
--   Quantiles interpolate linearly between order statistics; they are exact up to 8192 rewards
--   per row of the result and come from a uniform sample of 8192 beyond.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: by_run Bool = true -- one row per run; false: one row ('*') over all selected runs
SELECT
    run AS run_id,
    count() AS interactions,
    count(r) AS rewarded,
    avg(r) AS mean,
    stddevPop(r) AS std,
    min(r) AS min,
    if(rewarded > 0, quantiles(0.1, 0.25, 0.5, 0.75, 0.9)(r)[1], NULL) AS p10,
    if(rewarded > 0, quantiles(0.1, 0.25, 0.5, 0.75, 0.9)(r)[2], NULL) AS p25,
    if(rewarded > 0, quantiles(0.1, 0.25, 0.5, 0.75, 0.9)(r)[3], NULL) AS median,
    if(rewarded > 0, quantiles(0.1, 0.25, 0.5, 0.75, 0.9)(r)[4], NULL) AS p75,
    if(rewarded > 0, quantiles(0.1, 0.25, 0.5, 0.75, 0.9)(r)[5], NULL) AS p90,
    max(r) AS max
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
