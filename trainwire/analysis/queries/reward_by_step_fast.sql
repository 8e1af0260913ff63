-- name: reward_by_step_fast
-- description: Reward per run and step like reward_by_step, including interactions without a step
--   (step -1), over the interactions that carry the reward function; with what the aggregate
--   behind it (interaction_step_agg, migration 0004) received: rows inserted, distinct events and
--   duplicates (rows - events: the redeliveries). The statistics (rewarded, mean, population std,
--   min, max) count each event once.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
SELECT
    toString(run_id) AS run_id,
    step,
    rows,
    events,
    rows - events AS duplicates,
    rewarded,
    if(rewarded > 0, total / rewarded, NULL) AS mean,
    if(rewarded > 0, sqrt(greatest((total_sq - total * total / rewarded) / rewarded, 0)), NULL) AS std,
    min_reward AS min,
    max_reward AS max
FROM
(
    SELECT
        run_id,
        step,
        sum(inserted) AS rows,
        sum(reward_rows) AS events,
        sum(rewarded) AS rewarded,
        sum(reward_sum) AS total,
        sum(reward_sq) AS total_sq,
        min(reward_min) AS min_reward,
        max(reward_max) AS max_reward
    FROM
    (
        -- the exact statistics, and next to them what the aggregate received (redeliveries included)
        SELECT run_id, step, toUInt64(0) AS inserted, reward_rows, rewarded, reward_sum, reward_sq, reward_min, reward_max
        FROM interaction_step_stats(runs = {runs:Array(String)}, reward_fn = {reward_fn:String})
        UNION ALL
        SELECT
            run_id, step, if({reward_fn:String} = 'total', rows, fn_rows[{reward_fn:String}]), 0, 0, 0, 0, NULL, NULL
        FROM interaction_step_agg
        WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
    )
    GROUP BY run_id, step
    HAVING events > 0
)
ORDER BY run_id, step
