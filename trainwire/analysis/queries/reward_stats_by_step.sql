-- name: reward_stats_by_step
-- description: The rolling reward statistics the stats worker published (table reward_stats) per run,
--   reward function and window, oldest first: the window's steps (step windows) or time span
--   (microseconds since the epoch), count, non-finite values, mean, std, min, max, p10, p50, p90.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: window String = 'steps' -- tumbling step windows, or the sliding time window
-- choices: window = steps | time
SELECT
    toString(run_id) AS run_id,
    reward_fn,
    step_start,
    step_end,
    window_start_us,
    window_end_us,
    count,
    nonfinite,
    mean,
    std,
    min,
    max,
    p10,
    p50,
    p90
FROM reward_stats FINAL
WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, reward_stats.run_id)) AND window = {window:String}
ORDER BY run_id, reward_fn, window_start_us, ifNull(step_start, -1)
