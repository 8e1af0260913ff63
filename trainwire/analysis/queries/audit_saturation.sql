-- name: audit_saturation
-- description: Audit: is the reward saturated (at its maximum, most groups without variance: no
--   learning signal left)? Over the GRPO groups of two or more interactions with a finite total reward
--   in the run's last last_steps steps that have such groups: the run's maximum total reward
--   (reward_max, over every step), the groups, the steps they cover, the share of their interactions
--   whose reward is reward_max (at_max_share) and the share of groups whose rewards are all equal
--   (zero_variance_share).
-- param: run String = '' -- the run to audit
-- param: last_steps UInt32 = 10 -- how many of the run's last steps to look at
SELECT
    any(group_top) AS reward_max,
    count() AS groups,
    min(s) AS step_first,
    max(s) AS step_last,
    sum(at_max) / sum(members) AS at_max_share,
    avg(zero_variance) AS zero_variance_share
FROM
(
    SELECT
        assumeNotNull(step) AS s,
        count() AS members,
        countIf(reward = top.run_top) AS at_max,
        toFloat64(min(reward) = max(reward)) AS zero_variance,
        any(top.run_top) AS group_top
    FROM interactions FINAL
    CROSS JOIN
    (
        SELECT max(assumeNotNull(reward)) AS run_top
        FROM interactions FINAL
        WHERE run_id = {run:String} AND isFinite(reward) = 1
    ) AS top
    WHERE run_id = {run:String} AND step IS NOT NULL AND group_id IS NOT NULL AND isFinite(reward) = 1
    GROUP BY s, group_id
    HAVING members >= 2
)
WHERE s IN
(
    SELECT DISTINCT assumeNotNull(step) AS s
    FROM interactions FINAL
    WHERE run_id = {run:String} AND step IS NOT NULL AND group_id IS NOT NULL AND isFinite(reward) = 1
    GROUP BY s, group_id
    HAVING count() >= 2
    ORDER BY s DESC
    LIMIT {last_steps:UInt32}
)
HAVING groups > 0
