-- name: logits_by_level
-- description: Target-word probability per model, difficulty level and word: observations, samples,
--   mean probability, mean logit, mean rank. Rows without a level are left out.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: model String = '' -- only this model; empty: every model
SELECT
    model,
    assumeNotNull(level) AS level,
    target_token,
    count() AS observations,
    uniqExact(sample_id) AS samples,
    avg(probability) AS mean_probability,
    avg(logit) AS mean_logit,
    avg(rank) AS mean_rank
FROM logits FINAL
WHERE (empty({runs:Array(String)}) OR has({runs:Array(String)}, logits.run_id))
    AND ({model:String} = '' OR logits.model = {model:String}) AND logits.level IS NOT NULL
GROUP BY model, level, target_token
ORDER BY model, level, target_token
