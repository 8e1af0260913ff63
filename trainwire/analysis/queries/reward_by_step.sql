-- name: reward_by_step
-- description: Reward per run and training step: interactions, rewarded (finite reward), mean,
--   population std, min, max. Interactions without a step are left out. From the per-step
--   aggregates (view interaction_step_stats, migrations 0004 and 0005), exact under redelivery.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
SELECT
    toString(run_id) AS run_id,
    step,
    interactions,
    rewarded,
    if(rewarded > 0, reward_sum / rewarded, NULL) AS mean,
    if(rewarded > 0, sqrt(greatest((reward_sq - reward_sum * reward_sum / rewarded) / rewarded, 0)), NULL) AS std,
    reward_min AS min,
    reward_max AS max
FROM interaction_step_stats(runs = {runs:Array(String)}, reward_fn = {reward_fn:String})
WHERE stepped
ORDER BY run_id, step
-- not read in sorting-key order: FINAL would then merge the aggregate's map columns as it reads,
-- three times the work for a reward_fn other than 'total'
SETTINGS optimize_read_in_order = 0
