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
WITH
    pairs AS
    (
        SELECT
            if({by_run:Bool}, toString(run_id), '*') AS run,
            length AS v,
            if({reward_fn:String} = 'total', reward,
               if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw,
            if(isFinite(raw), raw, NULL) AS r
        FROM interaction_lengths(measure = {measure:String})
        WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
    ),
    (SELECT (min(v), max(v)) FROM pairs) AS bounds,
    greatest({bins:UInt32}, 1) AS nbins,
    bounds.1 AS lo,
    bounds.2 AS hi,
    if(hi > lo, (hi - lo) / nbins, 0) AS width
SELECT
    run AS run_id,
    {measure:String} AS measure,
    toUInt32(bin) AS bucket,
    lo + bin * width AS bucket_start,
    if(bin + 1 = nbins OR width = 0, hi, lo + (bin + 1) * width) AS bucket_end,
    count() AS interactions,
    count(r) AS rewarded,
    avg(r) AS mean_reward
FROM pairs
GROUP BY run, if(width > 0, least(toUInt64(floor((v - lo) / width)), toUInt64(nbins - 1)), toUInt64(0)) AS bin
ORDER BY run_id, bucket
