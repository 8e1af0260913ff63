-- 0005: a cheaper read of 0004's per-step aggregates for the analysis queries. A view only: no
-- table, no materialized view, nothing changes for inserts.
--
-- interaction_step_stats(runs, reward_fn): one row per run, step and stepped, with the columns of
-- 0004's interaction_steps plus first_ts and last_ts (the first and last event time of the step).
-- A step that agrees with interactions (not in interaction_agg_dirty) is its row of
-- interaction_step_agg FINAL as it stands; only the dirty steps are aggregated, from
-- interaction_agg_fresh (interactions FINAL). interaction_steps sums interaction_step_rows per
-- step instead, a GROUP BY over every step: this view reads the 156 K steps of 10 M interactions
-- in half the CPU time, and it is exact in the same way. A query that sorts its rows by run_id
-- and step should set optimize_read_in_order = 0: read in sorting-key order, FINAL merges the
-- aggregate's map columns as it reads (three times the work for a reward_fn other than 'total').
CREATE VIEW IF NOT EXISTS interaction_step_stats AS
WITH (SELECT groupArray((run_id, step)) FROM interaction_agg_dirty(runs = {runs:Array(String)})) AS dirty
SELECT
    run_id,
    step,
    stepped,
    rows AS interactions,
    first_ts,
    last_ts,
    if({reward_fn:String} = 'total', rows, fn_rows[{reward_fn:String}]) AS reward_rows,
    if({reward_fn:String} = 'total', rewarded, fn_rewarded[{reward_fn:String}]) AS rewarded,
    if({reward_fn:String} = 'total', reward_sum, fn_sum[{reward_fn:String}]) AS reward_sum,
    if({reward_fn:String} = 'total', reward_sq, fn_sq[{reward_fn:String}]) AS reward_sq,
    if({reward_fn:String} = 'total', reward_min,
       if(mapContains(fn_min, {reward_fn:String}), fn_min[{reward_fn:String}], NULL)) AS reward_min,
    if({reward_fn:String} = 'total', reward_max,
       if(mapContains(fn_max, {reward_fn:String}), fn_max[{reward_fn:String}], NULL)) AS reward_max
FROM interaction_step_agg FINAL
WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, run_id))
    AND (run_id, step) NOT IN (SELECT arrayJoin(dirty))
UNION ALL
SELECT
    run_id,
    step,
    stepped,
    sum(rows) AS interactions,
    min(first_ts) AS first_ts,
    max(last_ts) AS last_ts,
    sum(if({reward_fn:String} = 'total', rows, fn_rows[{reward_fn:String}])) AS reward_rows,
    sum(if({reward_fn:String} = 'total', rewarded, fn_rewarded[{reward_fn:String}])) AS rewarded,
    sum(if({reward_fn:String} = 'total', reward_sum, fn_sum[{reward_fn:String}])) AS reward_sum,
    sum(if({reward_fn:String} = 'total', reward_sq, fn_sq[{reward_fn:String}])) AS reward_sq,
    min(if({reward_fn:String} = 'total', reward_min,
           if(mapContains(fn_min, {reward_fn:String}), fn_min[{reward_fn:String}], NULL))) AS reward_min,
    max(if({reward_fn:String} = 'total', reward_max,
           if(mapContains(fn_max, {reward_fn:String}), fn_max[{reward_fn:String}], NULL))) AS reward_max
FROM interaction_agg_fresh
WHERE (run_id, step) IN (SELECT arrayJoin(dirty))
GROUP BY run_id, step, stepped;
