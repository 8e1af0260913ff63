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
        toString(run_id) AS run_id,
        step,
        sum(rewarded) AS interactions,
        countIf(grouped AND rewarded >= 2) AS groups,
        countIf(grouped AND rewarded >= 2 AND gstd <= {zero_std_eps:Float64}) AS zero_variance_groups,
        if(groups > 0, zero_variance_groups / groups, NULL) AS zero_variance_share,
        if(groups > 0, avgIf(gstd, grouped AND rewarded >= 2), NULL) AS mean_group_std,
        sum(reward_sum) / interactions AS reward_mean,
        sqrt(greatest(sum(reward_sq) / interactions - pow(reward_mean, 2), 0)) AS reward_std,
        sum(length_sum) / interactions AS mean_x,
        sum(length_sq) / interactions - pow(mean_x, 2) AS var_x,
        sum(reward_sq) / interactions - pow(reward_mean, 2) AS var_r,
        if(interactions >= 2 AND var_x > 1e-12 * greatest(sum(length_sq) / interactions, 1e-300)
               AND var_r > 1e-12 * greatest(sum(reward_sq) / interactions, 1e-300),
           greatest(-1., least(1., (sum(length_reward) / interactions - mean_x * reward_mean) / sqrt(var_x * var_r))),
           NULL) AS length_reward_corr
    FROM
    (
        -- one row per group (the step's interactions without a group_id form one more row)
        SELECT
            run_id, step, grouped, rewarded, reward_sum, reward_sq, length_sum, length_sq, length_reward,
            -- equal rewards: exactly 0, as the stream processor's two-pass std gives (the sums can
            -- leave rounding noise above zero_std_eps)
            if(reward_min = reward_max, 0.,
               sqrt(greatest((reward_sq - reward_sum * reward_sum / rewarded) / rewarded, 0))) AS gstd
        FROM interaction_groups(runs = {runs:Array(String)})
        WHERE stepped AND rewarded > 0
    )
    GROUP BY run_id, step
)
ORDER BY run_id, step
