-- 0009: one name per judge scale. `score` is the judge's own scale (1-5 with the default rubric)
-- and `score_normalized` that score mapped to 0..1, in judge_scores as in every view and query:
-- judge_verdicts and judge_pairs called their 0..1 column `score`, beside judge_scores.score on
-- 1-5. Both views now carry both columns under those names.

-- judge_verdicts(runs): the verdict that counts for each judged interaction, the latest
-- successful score of the selected runs' judge_scores (by ts, then by inserted_at: a rescore's
-- score carries its request's ts, and the one stored last counts).
CREATE OR REPLACE VIEW judge_verdicts AS
SELECT interaction_id, verdict.1 AS score, verdict.2 AS score_normalized
FROM
(
    SELECT interaction_id, argMax((score, assumeNotNull(score_normalized)), (ts, inserted_at)) AS verdict
    FROM judge_scores FINAL
    WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id))
        AND success AND isFinite(score_normalized) = 1
    GROUP BY interaction_id
);

-- judge_pairs(runs, reward_fn): one row per judged interaction of the selected runs: run_id,
-- step, interaction_id, the verdict that counts (the latest successful score: score on the
-- judge's scale, score_normalized on 0..1) and the reward ('total': the interaction's reward,
-- else that key of its rewards map; NULL when missing or not finite). Its step and reward are the
-- ones the score carries, else those of its interaction, which must then be stored
-- (interactions FINAL). Only the interactions of scores that carry nothing are read.
CREATE OR REPLACE VIEW judge_pairs AS
SELECT run_id, step, interaction_id, score, score_normalized, if(isFinite(raw), raw, NULL) AS reward
FROM
(
    SELECT
        v.verdict_run AS run_id,
        if(v.verdict.5, v.verdict.3, i.step) AS step,
        v.interaction_id AS interaction_id,
        v.verdict.1 AS score,
        v.verdict.2 AS score_normalized,
        if(v.verdict.5, v.verdict.4, i.raw) AS raw
    FROM
    (
        SELECT
            interaction_id,
            any(run_id) AS verdict_run,
            -- one tuple, so that scores, step and reward come from the same score row
            argMax(
                (
                    score,
                    assumeNotNull(score_normalized),
                    step,
                    if({reward_fn:String} = 'total', reward,
                       if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)),
                    reward IS NOT NULL OR notEmpty(rewards)
                ),
                (ts, inserted_at)
            ) AS verdict
        FROM judge_scores FINAL
        WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id))
            AND success AND isFinite(score_normalized) = 1
        GROUP BY interaction_id
    ) AS v
    LEFT JOIN
    (
        SELECT
            event_id,
            step,
            if({reward_fn:String} = 'total', reward,
               if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw
        FROM interactions FINAL
        WHERE event_id IN (SELECT interaction_id FROM judge_scores WHERE reward IS NULL AND empty(rewards))
    ) AS i ON v.interaction_id = i.event_id
    WHERE v.verdict.5 OR notEmpty(ifNull(i.event_id, ''))  -- unmatched: '' or, with join_use_nulls, NULL
);
