-- name: group_completions
-- description: The completions of one GRPO group side by side, in group order: the interaction,
--   prompt (text, or the messages as JSON), completion, total reward and each reward function's
--   value, advantage, length (tokens when reported, and characters), success, and the judge's
--   verdict that counts (the latest successful score: judge_score on the judge's scale,
--   judge_score_normalized on 0..1, and the reasoning). A reward that is not finite is NULL.
-- param: run String = '' -- the run id
-- param: step Int64 = 0 -- the training step
-- param: group String = '' -- the group id
SELECT
    i.event_id AS event_id,
    i.group_index AS group_index,
    i.prompt AS prompt,
    i.prompt_messages AS prompt_messages,
    i.completion AS completion,
    if(isFinite(i.reward) = 1, i.reward, NULL) AS reward,
    i.rewards AS rewards,
    i.advantage AS advantage,
    i.completion_tokens AS completion_tokens,
    i.completion_chars AS completion_chars,
    i.success AS success,
    j.verdict.1 AS judge_score_normalized,
    j.verdict.2 AS judge_score,
    j.verdict.3 AS judge_reasoning
FROM
(
    SELECT event_id, group_index, prompt, prompt_messages, completion, reward, rewards, advantage,
        completion_tokens, completion_chars, success
    FROM interactions FINAL
    WHERE run_id = {run:String} AND step = {step:Int64} AND group_id = {group:String}
) AS i
LEFT JOIN
(
    SELECT interaction_id, argMax((score_normalized, score, reasoning), (ts, inserted_at)) AS verdict
    FROM judge_scores FINAL
    WHERE run_id = {run:String} AND success AND isFinite(score_normalized) = 1
        AND interaction_id IN (
            SELECT event_id FROM interactions
            WHERE run_id = {run:String} AND step = {step:Int64} AND group_id = {group:String}
        )
    GROUP BY interaction_id
) AS j ON j.interaction_id = i.event_id
ORDER BY ifNull(i.group_index, 0), i.event_id
SETTINGS join_use_nulls = 1
