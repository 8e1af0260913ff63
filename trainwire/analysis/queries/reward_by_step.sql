-- name: reward_by_step
-- description: Reward per run and training step: interactions, rewarded (finite reward), mean,
--   population std, min, max. Interactions without a step are left out. (No quantiles here: one
--   sample per step over every step of every run costs more than the whole rest of the query.)
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
SELECT
    run_id,
    step,
    count() AS interactions,
    count(r) AS rewarded,
    avg(r) AS mean,
    stddevPop(r) AS std,
    min(r) AS min,
    max(r) AS max
FROM
(
    SELECT
        toString(run_id) AS run_id,
        assumeNotNull(step) AS step,
        if({reward_fn:String} = 'total', reward,
           if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw,
        if(isFinite(raw), raw, NULL) AS r
    FROM interactions FINAL
    WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, interactions.run_id)) AND interactions.step IS NOT NULL
)
GROUP BY run_id, step
ORDER BY run_id, step
