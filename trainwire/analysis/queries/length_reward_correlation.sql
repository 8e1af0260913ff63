-- name: length_reward_correlation
-- description: Pearson correlation of lengths with reward per run (or over all selected runs), over the
--   interactions with a finite reward and the measure present; NULL when either side does not vary.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: by_run Bool = true -- one row per run; false: one row ('*') over all selected runs
SELECT
    run AS run_id,
    count(r) AS rewarded,
    if(isFinite(corr(pc, r)), corr(pc, r), NULL) AS prompt_chars_corr,
    if(isFinite(corr(cc, r)), corr(cc, r), NULL) AS completion_chars_corr,
    if(isFinite(corr(pt, r)), corr(pt, r), NULL) AS prompt_tokens_corr,
    if(isFinite(corr(ct, r)), corr(ct, r), NULL) AS completion_tokens_corr
FROM
(
    SELECT
        if({by_run:Bool}, toString(run_id), '*') AS run,
        toFloat64(prompt_chars) AS pc,
        toFloat64(completion_chars) AS cc,
        toFloat64(prompt_tokens) AS pt,
        toFloat64(completion_tokens) AS ct,
        if({reward_fn:String} = 'total', reward,
           if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw,
        if(isFinite(raw), raw, NULL) AS r
    FROM interactions FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
)
GROUP BY run
ORDER BY run
