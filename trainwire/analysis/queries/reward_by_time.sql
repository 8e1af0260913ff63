-- name: reward_by_time
-- description: Reward per run and time bucket (event time, UTC): interactions, rewarded, mean,
--   population std, min, max. `bucket_start` is the bucket's first instant.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: bucket_s UInt32 = 60 -- bucket width in seconds
WITH
    toIntervalSecond(greatest({bucket_s:UInt32}, 1)) AS width,
    -- By step: a step whose interactions fall in one bucket adds its row of interaction_step_stats
    -- (migration 0005: the per-step aggregate, exact under redelivery) to that bucket; only the
    -- steps split between buckets are read row by row. That pays while few steps are split
    -- (buckets much longer than steps); when more than one step in 50 is, every interaction is read
    -- row by row and the by-step reads below are skipped. The choice only decides the cost, so it
    -- is taken on interaction_step_agg as is.
    (
        SELECT countIf(toStartOfInterval(first_ts, width) != toStartOfInterval(last_ts, width)) * 50 <= count()
        FROM interaction_step_agg
        WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
    ) AS by_step,
    -- the split steps, named by (cityHash64(run_id), step): numbers are cheap to look up in 10 M
    -- rows, and both sides use the same name, so a hash shared by two runs only sends more steps
    -- to be read row by row
    (
        SELECT groupUniqArray((cityHash64(run_id), step))
        FROM interaction_step_stats(runs = {runs:Array(String)}, reward_fn = {reward_fn:String})
        WHERE by_step AND toStartOfInterval(first_ts, width) != toStartOfInterval(last_ts, width)
    ) AS split
SELECT
    toString(run_id) AS run_id,
    toDateTime64(bucket, 0, 'UTC') AS bucket_start,
    sum(n) AS interactions,
    sum(rewarded) AS rewarded,
    if(rewarded > 0, sum(reward_sum) / rewarded, NULL) AS mean,
    if(rewarded > 0, sqrt(greatest((sum(reward_sq) - pow(sum(reward_sum), 2) / rewarded) / rewarded, 0)), NULL) AS std,
    min(reward_min) AS min,
    max(reward_max) AS max
FROM
(
    SELECT
        run_id,
        toStartOfInterval(first_ts, width) AS bucket,
        interactions AS n,
        rewarded,
        reward_sum,
        reward_sq,
        reward_min,
        reward_max
    FROM interaction_step_stats(runs = {runs:Array(String)}, reward_fn = {reward_fn:String})
    WHERE by_step AND (cityHash64(run_id), step) NOT IN (SELECT arrayJoin(split))
    UNION ALL
    -- row by row
    SELECT run_id, bucket, count(), countIf(finite), sumIf(r, finite), sumIf(r * r, finite), minIf(raw, finite),
        maxIf(raw, finite)
    FROM
    (
        SELECT
            run_id,
            toStartOfInterval(ts, width) AS bucket,
            if({reward_fn:String} = 'total', reward,
               if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw,
            isFinite(raw) = 1 AS finite,
            assumeNotNull(raw) AS r
        FROM interactions FINAL
        WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id))
            AND (NOT by_step OR (cityHash64(run_id), ifNull(step, -1)) IN (SELECT arrayJoin(split)))
    )
    GROUP BY run_id, bucket
)
GROUP BY run_id, bucket
ORDER BY run_id, bucket_start
