-- name: judge_agreement
-- description: How the LLM judge agrees with the rule reward, per run or over all selected runs. Pairs
--   are interactions with a finite reward and a successful judge score (score_normalized; the
--   latest when an interaction was judged twice), joined on judge_scores.interaction_id =
--   interactions.event_id. Columns: judged (successful scores), failed (unsuccessful ones), pairs,
--   mean judge score and reward over the pairs, Pearson and Spearman correlation (Pearson of the average ranks, ties sharing
--   their mean rank; NULL without variation), and the median agreement: the share of pairs where judge and reward fall on the same
--   side of their medians (both at the median counts as the same side).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: by_run Bool = true -- one row per run; false: one row ('*') over all selected runs
SELECT
    run_id,
    ifNull(judged, 0) AS judged,
    ifNull(failed, 0) AS failed,
    ifNull(pairs, 0) AS pairs,
    mean_judge,
    mean_reward,
    pearson,
    spearman,
    median_agreement
FROM
(
    SELECT
        run_id,
        count() AS pairs,
        avg(judge) AS mean_judge,
        avg(reward) AS mean_reward,
        if(isFinite(corr(judge, reward)), corr(judge, reward), NULL) AS pearson,
        if(isFinite(corr(judge_rank, reward_rank)), corr(judge_rank, reward_rank), NULL) AS spearman,
        avg(sign(judge - median_judge) = sign(reward - median_reward)) AS median_agreement
    FROM
    (
        SELECT
            run_id,
            judge,
            reward,
            rank() OVER (PARTITION BY run_id ORDER BY judge) + (count() OVER (PARTITION BY run_id, judge) - 1) / 2
                AS judge_rank,
            rank() OVER (PARTITION BY run_id ORDER BY reward) + (count() OVER (PARTITION BY run_id, reward) - 1) / 2
                AS reward_rank,
            quantileExactInclusive(0.5)(judge) OVER (PARTITION BY run_id) AS median_judge,
            quantileExactInclusive(0.5)(reward) OVER (PARTITION BY run_id) AS median_reward
        FROM
        (
            SELECT if({by_run:Bool}, toString(i.run_id), '*') AS run_id, j.score AS judge, i.r AS reward
            FROM
            (
                SELECT
                    event_id,
                    run_id,
                    if({reward_fn:String} = 'total', reward,
                       if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw,
                    assumeNotNull(raw) AS r
                FROM interactions FINAL
                WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)) AND isFinite(raw) = 1
            ) AS i
            INNER JOIN
            (
                SELECT interaction_id, argMax(assumeNotNull(score_normalized), ts) AS score
                FROM judge_scores FINAL
                WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id))
                    AND success AND isFinite(score_normalized) = 1
                GROUP BY interaction_id
            ) AS j ON i.event_id = j.interaction_id
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
