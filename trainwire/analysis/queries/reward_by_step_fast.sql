-- name: reward_by_step_fast
-- description: Reward per run and step from the reward_step_agg aggregate (migration 0003): rows
--   inserted, distinct events, rewarded, mean, population std, min, max. Fast on any
--   number of interactions; counts an event delivered twice twice (duplicates = rows - events),
--   where reward_by_step (interactions FINAL) is exact. Step -1: interactions without a step.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
SELECT
    run_id,
    step,
    rows,
    events,
    rows - events AS duplicates,
    rewarded,
    if(rewarded > 0, total / rewarded, NULL) AS mean,
    if(rewarded > 0, sqrt(greatest(total_sq / rewarded - pow(total / rewarded, 2), 0)), NULL) AS std,
    min_reward AS min,
    max_reward AS max
FROM
(
    SELECT
        toString(run_id) AS run_id,
        step,
        sum(row_count) AS rows,
        uniqMerge(event_ids) AS events,
        sum(rewarded) AS rewarded,
        sum(reward_sum) AS total,
        sum(reward_sq) AS total_sq,
        min(reward_min) AS min_reward,
        max(reward_max) AS max_reward
    FROM reward_step_agg
    WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, reward_step_agg.run_id))
        AND reward_step_agg.reward_fn = {reward_fn:String}
    GROUP BY run_id, step
)
ORDER BY run_id, step
