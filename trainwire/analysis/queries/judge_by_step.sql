-- name: judge_by_step
-- description: Judge score next to reward per run and step: over the interactions of the step with
--   a successful judge score (the latest per interaction), the pairs, mean judge score on 0..1
--   (mean_score_normalized) and mean reward of the same interactions (judge_pairs: the step and
--   reward the score carries, else its interaction's).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    toString(run_id) AS run_id,
    assumeNotNull(step) AS step,
    count() AS pairs,
    avg(score_normalized) AS mean_score_normalized,
    avg(reward) AS mean_reward
-- (filtered before the SELECT, where step is the alias of assumeNotNull(step))
FROM (SELECT * FROM judge_pairs(runs = {runs:Array(String)}, reward_fn = 'total') WHERE step IS NOT NULL)
GROUP BY run_id, step
ORDER BY run_id, step
