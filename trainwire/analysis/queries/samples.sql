-- name: samples
-- description: Example interactions for reading: the best (highest reward first), the worst (lowest
--   first) or a random selection that is the same for the same seed; each with its run, step, time,
--   prompt, completion, reward, rewards, success and metadata (JSON text). Interactions without a
--   finite reward are left out of best and worst.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: order String = 'best' -- which examples
-- choices: order = best | worst | random
-- param: limit UInt32 = 10 -- how many
-- param: seed UInt64 = 42 -- the random selection's seed
SELECT event_id, toString(run_id) AS run_id, ts, step, group_id, prompt, completion, reward, rewards, success,
    completion_tokens, metadata
FROM interactions FINAL
WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, interactions.run_id))
    AND ({order:String} = 'random' OR isFinite(interactions.reward) = 1)
ORDER BY
    multiIf({order:String} = 'best', -assumeNotNull(interactions.reward),
            {order:String} = 'worst', assumeNotNull(interactions.reward),
            toFloat64(cityHash64(interactions.event_id, {seed:UInt64}))),
    event_id
LIMIT {limit:UInt32}
