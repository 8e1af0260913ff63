-- name: runs_overview
-- description: One row per run, side by side: interactions, rewarded, mean reward, success share,
--   first and last event time, step range, and how many judge scores, train steps, alerts and
--   logits rows the run has (interactions from the per-step aggregates, view interaction_step_rows).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    run_id,
    sum(interactions) AS interactions,
    sum(rewarded) AS rewarded,
    if(rewarded > 0, sum(reward_sum) / rewarded, NULL) AS mean_reward,
    if(interactions > 0, sum(succeeded) / interactions, NULL) AS success_share,
    min(first_ts) AS first_ts,
    max(last_ts) AS last_ts,
    min(min_step) AS min_step,
    max(max_step) AS max_step,
    sum(judge_scores) AS judge_scores,
    sum(train_steps) AS train_steps,
    sum(alerts) AS alerts,
    sum(logits) AS logits
FROM
(
    SELECT
        toString(run_id) AS run_id,
        sum(g.rows) AS interactions,
        sum(g.rewarded) AS rewarded,
        sum(g.reward_sum) AS reward_sum,
        sum(g.succeeded) AS succeeded,
        toNullable(min(g.first_ts)) AS first_ts,
        toNullable(max(g.last_ts)) AS last_ts,
        min(if(g.stepped, g.step, NULL)) AS min_step,
        max(if(g.stepped, g.step, NULL)) AS max_step,
        toUInt64(0) AS judge_scores,
        toUInt64(0) AS train_steps,
        toUInt64(0) AS alerts,
        toUInt64(0) AS logits
    FROM interaction_step_rows(runs = {runs:Array(String)}) AS g
    GROUP BY run_id
    UNION ALL
    SELECT toString(run_id), 0, 0, 0, 0, min(ts), max(ts), NULL, NULL, count(), 0, 0, 0
    FROM judge_scores FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, judge_scores.run_id)
    GROUP BY run_id
    UNION ALL
    SELECT toString(run_id), 0, 0, 0, 0, min(ts), max(ts), min(step), max(step), 0, count(), 0, 0
    FROM train_steps FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, train_steps.run_id)
    GROUP BY run_id
    UNION ALL
    SELECT toString(run_id), 0, 0, 0, 0, min(ts), max(ts), NULL, NULL, 0, 0, count(), 0
    FROM alerts FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, alerts.run_id)
    GROUP BY run_id
    UNION ALL
    SELECT toString(run_id), 0, 0, 0, 0, min(ts), max(ts), NULL, NULL, 0, 0, 0, count()
    FROM logits FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, logits.run_id)
    GROUP BY run_id
)
GROUP BY run_id
ORDER BY run_id
