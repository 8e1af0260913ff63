-- name: judge_disagreements
-- description: Where the LLM judge and the rule reward disagree most, with the judge's reasoning:
--   the verdicts that count (judge_pairs, with a finite reward), the reward scaled to 0..1 between
--   the smallest and largest reward of the selection, the judge's score (its own scale) and
--   score_normalized (0..1), and the gap |score_normalized - scaled reward|; the pairs with a gap
--   of at least `min_gap`, largest first. All rewards equal: no gap, no row.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: min_gap Float64 = 0.5 -- list the pairs whose gap is at least this
-- param: limit UInt32 = 100 -- at most this many
SELECT
    p.run_id AS run_id,
    p.step AS step,
    p.interaction_id AS interaction_id,
    p.score AS score,
    p.score_normalized AS score_normalized,
    p.reward AS reward,
    p.scaled AS reward_scaled,
    abs(p.score_normalized - p.scaled) AS gap,
    s.reasoning AS reasoning
FROM
(
    SELECT
        toString(run_id) AS run_id, step, interaction_id, score, score_normalized, assumeNotNull(reward) AS reward,
        min(reward) OVER () AS lo,
        max(reward) OVER () AS hi,
        if(hi > lo, (reward - lo) / (hi - lo), NULL) AS scaled
    -- (filtered before the SELECT, where reward is the alias of assumeNotNull(reward))
    FROM
    (
        SELECT * FROM judge_pairs(runs = {runs:Array(String)}, reward_fn = {reward_fn:String})
        WHERE reward IS NOT NULL
    )
) AS p
LEFT JOIN
(
    SELECT interaction_id, argMax(reasoning, (ts, inserted_at)) AS reasoning
    FROM judge_scores FINAL
    WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, judge_scores.run_id))
        AND success AND isFinite(score_normalized) = 1
    GROUP BY interaction_id
) AS s ON s.interaction_id = p.interaction_id
WHERE p.scaled IS NOT NULL AND abs(p.score_normalized - p.scaled) >= {min_gap:Float64}
ORDER BY gap DESC, interaction_id
LIMIT {limit:UInt32}
SETTINGS join_use_nulls = 1
