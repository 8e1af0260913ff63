-- 0006: judge scores that carry the rule reward of the interaction they judge, so that comparing
-- judge and reward needs no join with interactions.
--
-- A judge request copies its interaction's step, reward and rewards map, and the judge worker
-- copies them into the score (judge_scores.step, .reward, .rewards). A score that carries them
-- (a reward or a non-empty rewards map) is paired on its own; any other (written before this
-- migration, or by a producer that does not copy them) is paired through interactions, as before.

ALTER TABLE judge_requests ADD COLUMN IF NOT EXISTS rewards Map(String, Float64) AFTER reward;

ALTER TABLE judge_scores ADD COLUMN IF NOT EXISTS reward Nullable(Float64) AFTER step;

ALTER TABLE judge_scores ADD COLUMN IF NOT EXISTS rewards Map(String, Float64) AFTER reward;

-- judge_pairs(runs, reward_fn): one row per judged interaction of the selected runs: run_id,
-- step, interaction_id, the judge score and the reward ('total': the interaction's reward, else
-- that key of its rewards map; NULL when missing or not finite). The verdict that counts is
-- judge_verdicts' (the latest successful score, score_normalized); its step and reward are the
-- ones it carries, else those of its interaction, which must then be stored (interactions FINAL).
-- Only the interactions of scores that carry nothing are read.
CREATE VIEW IF NOT EXISTS judge_pairs AS
SELECT run_id, step, interaction_id, score, if(isFinite(raw), raw, NULL) AS reward
FROM
(
    SELECT
        v.verdict_run AS run_id,
        if(v.verdict.4, v.verdict.2, i.step) AS step,
        v.interaction_id AS interaction_id,
        v.verdict.1 AS score,
        if(v.verdict.4, v.verdict.3, i.raw) AS raw
    FROM
    (
        SELECT
            interaction_id,
            any(run_id) AS verdict_run,
            -- one tuple, so that score, step and reward come from the same score row
            argMax(
                (
                    assumeNotNull(score_normalized),
                    step,
                    if({reward_fn:String} = 'total', reward,
                       if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)),
                    reward IS NOT NULL OR notEmpty(rewards)
                ),
                ts
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
    WHERE v.verdict.4 OR notEmpty(ifNull(i.event_id, ''))  -- unmatched: '' or, with join_use_nulls, NULL
);
