-- name: lengths
-- description: Prompt and completion lengths per run, in characters (Unicode code points) and in
--   tokens (where the producer reported them): for each measure the count of values, mean, min,
--   median, p90 and max. Measures: prompt_chars, completion_chars, prompt_tokens, completion_tokens.
--   Quantiles as in reward_summary (exact up to 8192 values per run and measure, sampled beyond).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    run_id,
    measure,
    count,
    if(count > 0, mean, NULL) AS mean,
    if(count > 0, min, NULL) AS min,
    if(count > 0, q[1], NULL) AS median,
    if(count > 0, q[2], NULL) AS p90,
    if(count > 0, max, NULL) AS max
FROM
(
    SELECT
        toString(run_id) AS run_id,
        [count(), count(), count(prompt_tokens), count(completion_tokens)] AS counts,
        [avg(prompt_chars), avg(completion_chars), avg(prompt_tokens), avg(completion_tokens)] AS means,
        [min(prompt_chars), min(completion_chars), min(prompt_tokens), min(completion_tokens)] AS mins,
        [max(prompt_chars), max(completion_chars), max(prompt_tokens), max(completion_tokens)] AS maxs,
        [
            quantiles(0.5, 0.9)(prompt_chars),
            quantiles(0.5, 0.9)(completion_chars),
            quantiles(0.5, 0.9)(prompt_tokens),
            quantiles(0.5, 0.9)(completion_tokens)
        ] AS qs
    FROM interactions FINAL
    WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, interactions.run_id)
    GROUP BY run_id
)
ARRAY JOIN
    ['prompt_chars', 'completion_chars', 'prompt_tokens', 'completion_tokens'] AS measure,
    counts AS count,
    means AS mean,
    mins AS min,
    maxs AS max,
    qs AS q
ORDER BY run_id, indexOf(['prompt_chars', 'completion_chars', 'prompt_tokens', 'completion_tokens'], measure)
