-- name: judge_agreement
-- description: How the LLM judge agrees with the rule reward, per run or over all selected runs.
--   Pairs are interactions with a finite reward and a successful judge score (score_normalized, on
--   0..1; the latest when an interaction was judged twice): judge_pairs, the reward the score
--   carries, else its interaction's (judge_scores.interaction_id = interactions.event_id). Columns:
--   judged (successful scores), failed (unsuccessful ones), pairs, mean judge score on 0..1
--   (mean_score_normalized) and reward over the pairs, Pearson and Spearman correlation (Pearson of
--   the average ranks, ties sharing their mean rank; NULL without variation), and the median
--   agreement: the share of pairs where judge and reward fall on the same side of their medians
--   (both at the median counts as the same side).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: by_run Bool = true -- one row per run; false: one row ('*') over all selected runs
SELECT
    run_id,
    ifNull(judged, 0) AS judged,
    ifNull(failed, 0) AS failed,
    ifNull(pairs, 0) AS pairs,
    mean_score_normalized,
    mean_reward,
    pearson,
    spearman,
    median_agreement
FROM
(
    -- correlations from weighted sums, in the form of ClickHouse's corr():
    -- (n*sum(xy) - sum(x)*sum(y)) / sqrt((n*sum(x2) - sum(x)^2) * (n*sum(y2) - sum(y)^2))
    SELECT
        run_id,
        sum(n) AS pairs,
        sum(n * judge) / pairs AS mean_score_normalized,
        sum(n * reward) / pairs AS mean_reward,
        (pairs * sum(n * judge * reward) - sum(n * judge) * sum(n * reward))
            / sqrt((pairs * sum(n * judge * judge) - pow(sum(n * judge), 2))
                   * (pairs * sum(n * reward * reward) - pow(sum(n * reward), 2))) AS r_values,
        (pairs * sum(n * judge_rank * reward_rank) - sum(n * judge_rank) * sum(n * reward_rank))
            / sqrt((pairs * sum(n * judge_rank * judge_rank) - pow(sum(n * judge_rank), 2))
                   * (pairs * sum(n * reward_rank * reward_rank) - pow(sum(n * reward_rank), 2))) AS r_ranks,
        if(isFinite(r_values), r_values, NULL) AS pearson,
        if(isFinite(r_ranks), r_ranks, NULL) AS spearman,
        sumIf(n, sign(judge - median_judge) = sign(reward - median_reward)) / pairs AS median_agreement
    FROM
    (
        -- the medians as quantileExactInclusive(0.5) takes them: the value at 0-based position
        -- lo = floor((pairs - 1) / 2), moved halfway to the next one when pairs is even
        SELECT
            *,
            floor(0.5 * (total - 1) + 1) AS pos,
            0.5 * (total - 1) + 1 - pos AS frac,
            minIf(judge, judge_upto > pos - 1) OVER (PARTITION BY run_id) AS judge_lo,
            minIf(judge, judge_upto > pos) OVER (PARTITION BY run_id) AS judge_hi,
            minIf(reward, reward_upto > pos - 1) OVER (PARTITION BY run_id) AS reward_lo,
            minIf(reward, reward_upto > pos) OVER (PARTITION BY run_id) AS reward_hi,
            if(frac = 0, judge_lo, judge_lo + frac * (judge_hi - judge_lo)) AS median_judge,
            if(frac = 0, reward_lo, reward_lo + frac * (reward_hi - reward_lo)) AS median_reward
        FROM
        (
            -- average ranks: the pairs below a value plus the middle of its ties
            SELECT
                *,
                sum(n) OVER (PARTITION BY run_id) AS total,
                sum(n) OVER (PARTITION BY run_id ORDER BY judge RANGE UNBOUNDED PRECEDING) AS judge_upto,
                sum(n) OVER (PARTITION BY run_id ORDER BY reward RANGE UNBOUNDED PRECEDING) AS reward_upto,
                judge_upto - (sum(n) OVER (PARTITION BY run_id, judge) - 1) / 2 AS judge_rank,
                reward_upto - (sum(n) OVER (PARTITION BY run_id, reward) - 1) / 2 AS reward_rank
            FROM
            (
                -- the pairs by distinct (run, judge score, reward): the window functions above then
                -- sort a few rows per run instead of every pair
                SELECT
                    if({by_run:Bool}, toString(run_id), '*') AS run_id, score_normalized AS judge, assumeNotNull(reward) AS reward, count() AS n
                -- (filtered before the SELECT, where reward is the alias of assumeNotNull(reward))
                FROM
                (
                    SELECT * FROM judge_pairs(runs = {runs:Array(String)}, reward_fn = {reward_fn:String})
                    WHERE reward IS NOT NULL
                )
                GROUP BY run_id, judge, reward
            )
        )
    )
    GROUP BY run_id
) AS agreement
FULL OUTER JOIN
(
    SELECT
        if({by_run:Bool}, toString(run_id), '*') AS run_id,
        countIf(success) AS judged,
        countIf(NOT success) AS failed
    FROM judge_scores FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
    GROUP BY run_id
) AS counts USING (run_id)
ORDER BY run_id
SETTINGS join_use_nulls = 1
