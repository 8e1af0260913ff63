-- name: reward_histogram
-- description: Reward histogram: `bins` equal-width bins between the smallest and largest finite reward
--   of the selected runs (the last bin includes the maximum), with the count per bin, per run
--   (the same bins for every run, so runs compare side by side) or over all selected runs.
--   All rewards equal: one bin holds them all.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: bins UInt32 = 20 -- number of bins
-- param: by_run Bool = false -- counts per run; false: one series ('*') over all selected runs
WITH
    rewards AS
    (
        SELECT run_id, assumeNotNull(raw) AS r
        FROM
        (
            SELECT
                run_id,
                if({reward_fn:String} = 'total', reward,
                   if(mapContains(rewards, {reward_fn:String}), rewards[{reward_fn:String}], NULL)) AS raw
            FROM interactions FINAL
            WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)) AND isFinite(raw) = 1
        )
    ),
    (SELECT (min(r), max(r)) FROM rewards) AS bounds,
    greatest({bins:UInt32}, 1) AS nbins,
    bounds.1 AS lo,
    bounds.2 AS hi,
    if(hi > lo, (hi - lo) / nbins, 0) AS width
SELECT
    run AS run_id,
    toUInt32(b) AS bin,
    lo + b * width AS bin_start,
    if(b + 1 = nbins, hi, lo + (b + 1) * width) AS bin_end,
    counts[b] AS count
FROM
(
    SELECT run, CAST((groupArray(bin), groupArray(n)), 'Map(UInt64, UInt64)') AS counts
    FROM
    (
        -- per run, or over all runs with no grouping key (grouping by a constant '*' costs as much
        -- as by a column): two branches, and the one not asked for reads nothing
        SELECT toString(run_id) AS run, bin, count() AS n
        FROM
        (
            SELECT run_id, if(width > 0, least(toUInt64(floor((r - lo) / width)), toUInt64(nbins - 1)), toUInt64(0)) AS bin
            FROM rewards
            WHERE {by_run:Bool}
        )
        GROUP BY run_id, bin
        UNION ALL
        SELECT '*', bin, count()
        FROM
        (
            SELECT if(width > 0, least(toUInt64(floor((r - lo) / width)), toUInt64(nbins - 1)), toUInt64(0)) AS bin
            FROM rewards
            WHERE NOT {by_run:Bool}
        )
        GROUP BY bin
    )
    GROUP BY run
)
ARRAY JOIN range(if(width > 0, nbins, 1)) AS b
ORDER BY run_id, bin
