-- name: judge_agreement_by_step
-- description: How the LLM judge agrees with the rule reward per run and step: over the step's verdicts
--   that count (judge_pairs: the latest successful score per interaction, with a finite reward) the
--   pairs and the Pearson correlation of judge score and reward (NULL without variation or with
--   fewer than two pairs).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
SELECT
    toString(run_id) AS run_id,
    assumeNotNull(step) AS step,
    count() AS pairs,
    if(isFinite(corr(score_normalized, r)), corr(score_normalized, r), NULL) AS pearson
FROM
(
    SELECT run_id, step, score_normalized, assumeNotNull(reward) AS r
    FROM judge_pairs(runs = {runs:Array(String)}, reward_fn = {reward_fn:String})
    WHERE reward IS NOT NULL AND step IS NOT NULL
)
GROUP BY run_id, step
ORDER BY run_id, step
