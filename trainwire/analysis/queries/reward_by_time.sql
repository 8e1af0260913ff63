-- name: reward_by_time
-- description: Reward per run and time bucket (event time, UTC): interactions, rewarded, mean,
--   population std, min, max. `bucket_start` is the bucket's first instant.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: bucket_s UInt32 = 60 -- bucket width in seconds
SELECT
    run_id,
    bucket_start,
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
        toDateTime64(toStartOfInterval(ts, toIntervalSecond(greatest({bucket_s:UInt32}, 1))), 0, 'UTC') AS bucket_start,
        if({reward_fn:String} = 'total', reward,
           if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw,
        if(isFinite(raw), raw, NULL) AS r
    FROM interactions FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, interactions.run_id)
)
GROUP BY run_id, bucket_start
ORDER BY run_id, bucket_start
