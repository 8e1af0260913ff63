-- name: group_stats_stored
-- description: The GRPO group statistics the stats worker published (table group_stats), per run and
--   step, including the judge agreement it measured over the step's judged interactions.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    toString(run_id) AS run_id,
    step,
    interactions,
    groups,
    zero_variance_groups,
    zero_variance_share,
    mean_group_std,
    reward_mean,
    reward_std,
    length_reward_corr,
    judge_pairs,
    judge_pearson,
    judge_spearman,
    judge_median_agreement
FROM group_stats FINAL
WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, group_stats.run_id)
ORDER BY run_id, step
