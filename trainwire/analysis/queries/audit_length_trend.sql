-- name: audit_length_trend
-- description: Audit: does completion length trend with reward while correctness stays flat (length
--   hacking)? Over the run's steps (per step: the mean completion length in tokens, in characters where
--   the token count is missing; the mean total reward; the mean of the correctness reward function):
--   the steps and the first and last; the Pearson correlation of length with reward and of length with
--   step; and the change over the run of length and of correctness (the least-squares slope over steps
--   times the steps spanned). Interactions with a finite total reward and a step count.
-- param: run String = '' -- the run to audit
-- param: correctness String = '' -- the key of the rewards map that says whether a completion is correct
SELECT
    count() AS steps,
    min(s) AS step_first,
    max(s) AS step_last,
    if(isFinite(corr(length, total)), corr(length, total), NULL) AS length_reward_pearson,
    if(isFinite(corr(toFloat64(s), length)), corr(toFloat64(s), length), NULL) AS length_step_pearson,
    simpleLinearRegression(toFloat64(s), length).1 * (max(s) - min(s)) AS length_change,
    if(
        countIf(correct IS NOT NULL) = count(),
        simpleLinearRegression(toFloat64(s), correct).1 * (max(s) - min(s)),
        NULL
    ) AS correctness_change
FROM
(
    SELECT
        assumeNotNull(step) AS s,
        avg(ifNull(toFloat64(completion_tokens), toFloat64(lengthUTF8(completion)))) AS length,
        avg(assumeNotNull(reward)) AS total,
        avgIfOrNull(rewards[{correctness:String}], mapContains(rewards, {correctness:String})) AS correct
    FROM interactions FINAL
    WHERE run_id = {run:String} AND step IS NOT NULL AND isFinite(reward) = 1
    GROUP BY s
)
HAVING steps > 0
