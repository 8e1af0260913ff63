-- name: judge_compare
-- description: Two judge configurations (two judges, templates or modes) compared on the interactions
--   both scored successfully: n, agreement (the share given the same score on the judges' scale),
--   Pearson correlation of their scores on 0..1 (NULL without variation), each side's mean score on
--   0..1 (mean_score_normalized_a and _b), the mean difference b - a and the mean absolute difference
--   on 0..1. A side selects scores by judge model, template (its name, e.g. 'default', or version,
--   'default-1a2b3c4d5e') and mode (single or group); '' matches any. An interaction a side scored
--   more than once counts with the score stored last. No row when no interaction was scored by both.
-- param: a_model String = '' -- side a: the judge model ('' any)
-- param: a_template String = '' -- side a: template name or version ('' any)
-- param: a_mode String = '' -- side a: single or group ('' any)
-- param: b_model String = '' -- side b: the judge model ('' any)
-- param: b_template String = '' -- side b: template name or version ('' any)
-- param: b_mode String = '' -- side b: single or group ('' any)
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    count() AS n,
    avg(score_a = score_b) AS agreement,
    if(isFinite(corr(norm_a, norm_b)), corr(norm_a, norm_b), NULL) AS pearson,
    avg(norm_a) AS mean_score_normalized_a,
    avg(norm_b) AS mean_score_normalized_b,
    avg(norm_b - norm_a) AS mean_difference,
    avg(abs(norm_b - norm_a)) AS mean_abs_difference
FROM
(
    -- one pass over the scores: each interaction's latest score on each side
    SELECT
        interaction_id,
        argMaxIf(assumeNotNull(score), inserted_at, on_a) AS score_a,
        argMaxIf(assumeNotNull(score_normalized), inserted_at, on_a) AS norm_a,
        argMaxIf(assumeNotNull(score), inserted_at, on_b) AS score_b,
        argMaxIf(assumeNotNull(score_normalized), inserted_at, on_b) AS norm_b
    FROM
    (
        SELECT
            interaction_id, score, score_normalized, inserted_at,
            ({a_model:String} = '' OR judge_model = {a_model:String})
                AND ({a_template:String} = '' OR template_name = {a_template:String}
                     OR template_version = {a_template:String})
                AND ({a_mode:String} = '' OR mode = {a_mode:String}) AS on_a,
            ({b_model:String} = '' OR judge_model = {b_model:String})
                AND ({b_template:String} = '' OR template_name = {b_template:String}
                     OR template_version = {b_template:String})
                AND ({b_mode:String} = '' OR mode = {b_mode:String}) AS on_b
        FROM judge_scores FINAL
        WHERE success AND isFinite(score_normalized) = 1
            AND (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id))
    )
    GROUP BY interaction_id
    HAVING countIf(on_a) > 0 AND countIf(on_b) > 0
)
HAVING n > 0
