-- name: judge_by_step
-- description: Judge score next to reward per run and step: over the interactions of the step with a
--   successful judge score (the latest per interaction), the pairs, mean judge score
--   (score_normalized) and mean reward of the same interactions.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    toString(i.run_id) AS run_id,
    i.step AS step,
    count() AS pairs,
    avg(j.score) AS mean_judge,
    avg(i.r) AS mean_reward
FROM
(
    SELECT event_id, run_id, assumeNotNull(step) AS step, if(isFinite(reward), reward, NULL) AS r
    FROM interactions FINAL
    WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)) AND step IS NOT NULL
) AS i
INNER JOIN judge_verdicts(runs = {runs:Array(String)}) AS j ON i.event_id = j.interaction_id
GROUP BY run_id, step
ORDER BY run_id, step
