-- name: group_stats
-- description: GRPO group statistics per run and step, computed from the interactions (the same
--   definitions as trainwire.processors.stats.GroupStats): interactions with a finite reward;
--   groups (group_id) with at least two of them, how many have a reward std <= zero_std_eps, that
--   share and the mean within-group std; the step's reward mean and population std; the Pearson
--   correlation of completion length (tokens, else characters) with reward.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: zero_std_eps Float64 = 1e-9 -- a group whose reward std is at most this does not vary
SELECT
    run_id, step, interactions, groups, zero_variance_groups, zero_variance_share, mean_group_std,
    reward_mean, reward_std, length_reward_corr
FROM
(
    SELECT
        run_id,
        step,
        sum(n) AS interactions,
        countIf(grouped AND n >= 2) AS groups,
        countIf(grouped AND n >= 2 AND gstd <= {zero_std_eps:Float64}) AS zero_variance_groups,
        if(groups > 0, zero_variance_groups / groups, NULL) AS zero_variance_share,
        if(groups > 0, avgIf(gstd, grouped AND n >= 2), NULL) AS mean_group_std,
        sum(sr) / interactions AS reward_mean,
        sqrt(greatest(sum(srr) / interactions - pow(reward_mean, 2), 0)) AS reward_std,
        sum(sx) / interactions AS mean_x,
        sum(sxx) / interactions - pow(mean_x, 2) AS var_x,
        sum(srr) / interactions - pow(reward_mean, 2) AS var_r,
        if(interactions >= 2 AND var_x > 1e-12 * greatest(sum(sxx) / interactions, 1e-300)
               AND var_r > 1e-12 * greatest(sum(srr) / interactions, 1e-300),
           greatest(-1., least(1., (sum(sxr) / interactions - mean_x * reward_mean) / sqrt(var_x * var_r))),
           NULL) AS length_reward_corr
    FROM
    (
        SELECT
            run_id,
            step,
            grouped,
            count() AS n,
            stddevPop(r) AS gstd,
            sum(r) AS sr,
            sum(r * r) AS srr,
            sum(x) AS sx,
            sum(x * x) AS sxx,
            sum(x * r) AS sxr
        FROM
        (
            SELECT
                toString(run_id) AS run_id,
                assumeNotNull(step) AS step,
                group_id IS NOT NULL AS grouped,
                cityHash64(ifNull(group_id, '')) AS group_key,
                assumeNotNull(reward) AS r,
                toFloat64(ifNull(completion_tokens, completion_chars)) AS x
            FROM interactions FINAL
            WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, interactions.run_id))
                AND interactions.step IS NOT NULL AND isFinite(reward) = 1
        )
        GROUP BY run_id, step, grouped, group_key -- a 64-bit hash of group_id: a cheaper key
    )
    GROUP BY run_id, step
)
ORDER BY run_id, step
