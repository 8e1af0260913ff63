-- name: audit_component_dominance
-- description: Audit: how much of a run's total reward each reward function drives. Per reward function
--   (a key of the rewards map), over the run's interactions with a finite total reward and a step: the
--   interactions, the steps they cover, and variance_share, the share of the total reward's variance
--   within GRPO groups that the function explains alone (the squared Pearson correlation of its value
--   and the total, both as deviations from their group's mean; interactions without a group form one
--   group). With uncorrelated functions the shares add up to 1. NULL when either does not vary.
-- param: run String = '' -- the run to audit
SELECT
    reward_fn,
    count() AS interactions,
    min(step) AS step_first,
    max(step) AS step_last,
    if(isFinite(corr(value_deviation, total_deviation)), pow(corr(value_deviation, total_deviation), 2), NULL)
        AS variance_share
FROM
(
    SELECT
        reward_fn,
        step,
        value - avg(value) OVER (PARTITION BY reward_fn, grp) AS value_deviation,
        total - avg(total) OVER (PARTITION BY reward_fn, grp) AS total_deviation
    FROM
    (
        SELECT
            arrayJoin(mapKeys(rewards)) AS reward_fn,
            rewards[reward_fn] AS value,
            assumeNotNull(reward) AS total,
            ifNull(group_id, '') AS grp,
            assumeNotNull(step) AS step
        FROM interactions FINAL
        WHERE run_id = {run:String} AND step IS NOT NULL AND isFinite(reward) = 1
    )
    WHERE isFinite(value)
)
GROUP BY reward_fn
ORDER BY reward_fn
