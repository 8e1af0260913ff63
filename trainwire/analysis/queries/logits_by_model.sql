-- name: logits_by_model
-- description: Target-word logits per model and word (the logits probe): observations, samples, mean
--   probability, mean logit and mean rank.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    model,
    target_token,
    count() AS observations,
    uniqExact(sample_id) AS samples,
    avg(probability) AS mean_probability,
    avg(logit) AS mean_logit,
    avg(rank) AS mean_rank
FROM logits FINAL
WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, logits.run_id)
GROUP BY model, target_token
ORDER BY model, target_token
