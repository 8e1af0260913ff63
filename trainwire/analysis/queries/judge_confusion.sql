-- name: judge_confusion
-- description: Judge score against rule reward as a grid: the verdicts that count (judge_pairs, with a
--   finite reward) counted by judge score bin (score_normalized in `bins` equal bins of 0..1) and
--   reward bin (`bins` equal-width bins between the smallest and largest reward of the selection;
--   all rewards equal: one bin). Only the cells with pairs are listed.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: reward_fn String = 'total' -- 'total' (the interaction's reward) or a key of the rewards map
-- param: bins UInt32 = 5 -- bins per axis
SELECT
    toUInt32(least(floor(judge * nbins), nbins - 1.)) AS judge_bin,
    toUInt32(if(hi > lo, least(floor((r - lo) / (hi - lo) * nbins), nbins - 1.), 0)) AS reward_bin,
    judge_bin / nbins AS judge_start,
    (judge_bin + 1) / nbins AS judge_end,
    if(hi > lo, lo + reward_bin * (hi - lo) / nbins, lo) AS reward_start,
    if(hi > lo, lo + (reward_bin + 1) * (hi - lo) / nbins, hi) AS reward_end,
    count() AS pairs
FROM
(
    SELECT
        greatest(least(score_normalized, 1.), 0.) AS judge,
        assumeNotNull(reward) AS r,
        min(r) OVER () AS lo,
        max(r) OVER () AS hi,
        greatest({bins:UInt32}, 1) AS nbins
    FROM judge_pairs(runs = {runs:Array(String)}, reward_fn = {reward_fn:String})
    WHERE reward IS NOT NULL
)
GROUP BY judge_bin, reward_bin, judge_start, judge_end, reward_start, reward_end
ORDER BY judge_bin, reward_bin
