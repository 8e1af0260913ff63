-- name: audit_judge_drift
-- description: Audit: do the LLM judge and a rule reward disagree more and more over steps? Over the
--   run's steps with at least two judged interactions whose Pearson correlation of judge score and reward
--   is defined (as judge_agreement_by_step: judge_pairs, the latest successful verdict per interaction):
--   the steps, the first and last, the pairs, the correlation at the first and the last of them, and
--   agreement_change, the change of the correlation over the run (the least-squares slope over steps
--   times the steps spanned; negative: growing disagreement).
-- param: run String = '' -- the run to audit
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
SELECT
    count() AS steps,
    min(step) AS step_first,
    max(step) AS step_last,
    sum(pairs) AS pairs,
    argMin(pearson, step) AS pearson_first,
    argMax(pearson, step) AS pearson_last,
    simpleLinearRegression(toFloat64(step), pearson).1 * (max(step) - min(step)) AS agreement_change
FROM
(
    SELECT step, count() AS pairs, corr(score_normalized, r) AS pearson
    FROM
    (
        SELECT step, score_normalized, assumeNotNull(reward) AS r
        FROM judge_pairs(runs = [{run:String}], reward_fn = {reward_fn:String})
        WHERE reward IS NOT NULL AND step IS NOT NULL
    )
    GROUP BY step
    HAVING pairs >= 2 AND isFinite(pearson)
)
HAVING steps > 0
