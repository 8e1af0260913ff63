-- name: logits_by_position
-- description: Target-word probability along the answer per model and word: positions grouped in
--   buckets of `bucket` tokens (position_start = the bucket's first position), observations and mean
--   probability, mean logit, mean rank.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: model String = '' -- only this model; empty: every model
-- param: bucket UInt32 = 1 -- positions per bucket
SELECT
    model,
    intDiv(position, greatest({bucket:UInt32}, 1)) * greatest({bucket:UInt32}, 1) AS position_start,
    target_token,
    count() AS observations,
    avg(probability) AS mean_probability,
    avg(logit) AS mean_logit,
    avg(rank) AS mean_rank
FROM logits FINAL
WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, logits.run_id))
    AND ({model:String} = '' OR logits.model = {model:String})
GROUP BY model, position_start, target_token
ORDER BY model, position_start, target_token
