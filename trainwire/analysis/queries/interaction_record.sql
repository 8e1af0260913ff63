-- name: interaction_record
-- description: One interaction in full: every stored field (prompt or messages, completion,
--   rewards, metadata with the token stats when the hook stored them, tokens, latency, model,
--   error) and the judge's verdict that counts (the latest successful score: judge_score on the
--   judge's scale, judge_score_normalized on 0..1, judge model, reasoning) with the number of
--   failed judgements. A reward that is not finite is NULL. Give the run too when known: it is
--   found faster.
-- param: event_id String = '' -- the interaction's event id
-- param: run String = '' -- its run id; empty: look in every run
SELECT
    i.event_id AS event_id,
    toString(i.run_id) AS run_id,
    i.ts AS ts,
    i.step AS step,
    i.group_id AS group_id,
    i.group_index AS group_index,
    i.prompt AS prompt,
    i.prompt_messages AS prompt_messages,
    i.completion AS completion,
    if(isFinite(i.reward) = 1, i.reward, NULL) AS reward,
    i.rewards AS rewards,
    i.advantage AS advantage,
    i.success AS success,
    i.error AS error,
    i.latency_ms AS latency_ms,
    i.prompt_tokens AS prompt_tokens,
    i.completion_tokens AS completion_tokens,
    i.model AS model,
    i.metadata AS metadata,
    j.verdict.1 AS judge_score_normalized,
    j.verdict.2 AS judge_score,
    j.verdict.3 AS judge_model,
    j.verdict.4 AS judge_reasoning,
    ifNull(j.failed, 0) AS judge_failures
FROM
(
    SELECT *
    FROM interactions FINAL
    WHERE event_id = {event_id:String} AND ({run:String} = '' OR run_id = {run:String})
) AS i
LEFT JOIN
(
    SELECT
        interaction_id,
        argMaxIf((score_normalized, score, judge_model, reasoning), (ts, inserted_at), success AND isFinite(score_normalized) = 1)
            AS verdict,
        countIf(NOT success) AS failed
    FROM judge_scores FINAL
    WHERE interaction_id = {event_id:String} AND ({run:String} = '' OR run_id = {run:String})
    GROUP BY interaction_id
) AS j ON j.interaction_id = i.event_id
SETTINGS join_use_nulls = 1
