-- name: length_histogram
-- description: Histogram of one length measure: `bins` equal-width bins between the smallest and largest
--   value of the selected runs (the last bin includes the maximum), count per bin, per run or over
--   all selected runs. Interactions without the measure (no token count) are left out.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: measure String = 'completion_chars' -- which length
-- choices: measure = prompt_chars | completion_chars | prompt_tokens | completion_tokens
-- param: bins UInt32 = 20 -- number of bins
-- param: by_run Bool = false -- counts per run; false: one series ('*') over all selected runs
WITH
    lengths AS
    (
        SELECT if({by_run:Bool}, toString(run_id), '*') AS run, length AS v
        FROM interaction_lengths(measure = {measure:String})
        WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id)
    ),
    (SELECT (min(v), max(v)) FROM lengths) AS bounds,
    greatest({bins:UInt32}, 1) AS nbins,
    bounds.1 AS lo,
    bounds.2 AS hi,
    if(hi > lo, (hi - lo) / nbins, 0) AS width
SELECT
    run AS run_id,
    {measure:String} AS measure,
    toUInt32(b) AS bin,
    lo + b * width AS bin_start,
    if(b + 1 = nbins, hi, lo + (b + 1) * width) AS bin_end,
    counts[b] AS count
FROM
(
    SELECT run, CAST((groupArray(bin), groupArray(n)), 'Map(UInt64, UInt64)') AS counts
    FROM
    (
        SELECT run, if(width > 0, least(toUInt64(floor((v - lo) / width)), toUInt64(nbins - 1)), toUInt64(0)) AS bin, count() AS n
        FROM lengths
        GROUP BY run, bin
    )
    GROUP BY run
)
ARRAY JOIN range(if(width > 0, nbins, 1)) AS b
ORDER BY run_id, bin
