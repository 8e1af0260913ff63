-- name: length_vs_reward
-- description: Reward by length bucket: `bins` equal-width buckets of one length measure between its
--   smallest and largest value over the selected runs, and per bucket the interactions, those with a
--   finite reward, and their mean reward; per run or over all selected runs.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: measure String = 'completion_chars' -- which length
-- choices: measure = prompt_chars | completion_chars | prompt_tokens | completion_tokens
-- param: bins UInt32 = 10 -- number of buckets
-- param: by_run Bool = false -- one series per run; false: one series ('*') over all selected runs
SELECT
    run AS run_id,
    {measure:String} AS measure,
    -- Nullable, as when the bounds came from a scalar subquery
    toNullable(toUInt32(bin)) AS bucket,
    toNullable(lo + bin * width) AS bucket_start,
    toNullable(if(bin + 1 = nbins OR width = 0, hi, lo + (bin + 1) * width)) AS bucket_end,
    sum(n) AS interactions,
    sum(scored) AS rewarded,
    if(rewarded > 0, sum(total) / rewarded, NULL) AS mean_reward
FROM
(
    -- the buckets from one row per run and distinct length: one pass over the interactions, where
    -- taking the bounds first and then the buckets would read them twice
    SELECT
        *,
        greatest({bins:UInt32}, 1) AS nbins,
        min(v) OVER () AS lo,
        max(v) OVER () AS hi,
        if(hi > lo, (hi - lo) / nbins, 0) AS width,
        if(width > 0, least(toUInt64(floor((v - lo) / width)), toUInt64(nbins - 1)), toUInt64(0)) AS bin
    FROM
    (
        SELECT
            if({by_run:Bool}, toString(run_id), '*') AS run,
            length AS v,
            count() AS n,
            countIf(isFinite(raw) = 1) AS scored,
            sumIf(assumeNotNull(raw), isFinite(raw) = 1) AS total
        FROM
        (
            SELECT
                run_id,
                length,
                if({reward_fn:String} = 'total', reward,
                   if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw
            FROM interaction_lengths(measure = {measure:String})
            WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
        )
        GROUP BY run, v
    )
)
GROUP BY run, bin, lo, hi, width, nbins
ORDER BY run_id, bucket
