-- name: length_histogram
-- description: Histogram of one length measure: `bins` equal-width bins between the smallest and largest
--   value of the selected runs (the last bin includes the maximum), count per bin, per run or over
--   all selected runs. Interactions without the measure (no token count) are left out.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: measure String = 'completion_chars' -- which length
-- choices: measure = prompt_chars | completion_chars | prompt_tokens | completion_tokens
-- param: bins UInt32 = 20 -- number of bins
-- param: by_run Bool = false -- counts per run; false: one series ('*') over all selected runs
SELECT
    run AS run_id,
    {measure:String} AS measure,
    toUInt32(b) AS bin,
    -- Nullable, as when the bounds came from a scalar subquery
    toNullable(lo + b * width) AS bin_start,
    toNullable(if(b + 1 = nbins, hi, lo + (b + 1) * width)) AS bin_end,
    counts[b] AS count
FROM
(
    SELECT
        run,
        any(nbins) AS nbins,
        any(lo) AS lo,
        any(hi) AS hi,
        any(width) AS width,
        CAST((groupArray(bin), groupArray(n)), 'Map(UInt64, UInt64)') AS counts
    FROM
    (
        -- the bins from one row per run and distinct length: one pass over the interactions, where
        -- taking the bounds first and then the bins would read them twice
        SELECT
            run,
            greatest({bins:UInt32}, 1) AS nbins,
            lo,
            hi,
            width,
            if(width > 0, least(toUInt64(floor((v - lo) / width)), toUInt64(nbins - 1)), toUInt64(0)) AS bin,
            sum(n) AS n
        FROM
        (
            SELECT
                *,
                min(v) OVER () AS lo,
                max(v) OVER () AS hi,
                if(hi > lo, (hi - lo) / greatest({bins:UInt32}, 1), 0) AS width
            FROM
            (
                SELECT if({by_run:Bool}, toString(run_id), '*') AS run, length AS v, count() AS n
                FROM interaction_lengths(measure = {measure:String})
                WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
                GROUP BY run, v
            )
        )
        GROUP BY run, lo, hi, width, bin
    )
    GROUP BY run
)
ARRAY JOIN range(if(width > 0, nbins, 1)) AS b
ORDER BY run_id, bin
