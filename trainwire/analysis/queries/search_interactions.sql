-- name: search_interactions
-- description: Interactions that match every filter given, newest first, with the start of their
--   prompt and completion (200 characters) for a list: run, step range, reward range (total reward;
--   an interaction without a finite reward matches no range), success, judged or not (a successful
--   judge score), a text the prompt, prompt messages or completion contains (case-insensitive as
--   positionCaseInsensitiveUTF8: each letter matches its one other case, non-ASCII ones too, É = é,
--   Σ = σ; no folding of one letter into several, ß != SS, nor of variant forms, ς != σ; the Kelvin
--   sign U+212A matches k in some blocks of rows and not in others, a ClickHouse quirk). A reward
--   that is not finite is NULL. A text of 4 bytes or more reads only the granules that the
--   text_ngrams index (migration 0007) cannot rule out; the rows are those of a full scan.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: text String = '' -- only interactions with this text in the prompt (or messages) or completion; empty: all
-- param: step_min Int64 = -1 -- lowest step; negative: no lower bound
-- param: step_max Int64 = -1 -- highest step; negative: no upper bound
-- param: reward_min Float64 = -1e308 -- lowest total reward (-1e308: no lower bound)
-- param: reward_max Float64 = 1e308 -- highest total reward (1e308: no upper bound)
-- param: success String = 'any' -- succeeded or failed calls
-- choices: success = any | true | false
-- param: judged String = 'any' -- with or without a successful judge score
-- choices: judged = any | yes | no
-- param: limit UInt32 = 50 -- at most this many
-- param: offset UInt32 = 0 -- skip this many (the next page)
WITH
    event_id IN (SELECT interaction_id FROM judge_scores WHERE success) AS judged,
    (empty({runs:Array(String)}) OR has({runs:Array(String)}, interactions.run_id))
    AND ({step_min:Int64} < 0 OR ifNull(interactions.step, -1) >= {step_min:Int64})
    AND ({step_max:Int64} < 0 OR ifNull(interactions.step, 9223372036854775807) <= {step_max:Int64})
    AND (({reward_min:Float64} <= -1e308 AND {reward_max:Float64} >= 1e308)
         OR (isFinite(interactions.reward) = 1
             AND assumeNotNull(interactions.reward) BETWEEN {reward_min:Float64} AND {reward_max:Float64}))
    AND ({success:String} = 'any' OR interactions.success = ({success:String} = 'true'))
    AND ({judged:String} = 'any' OR judged = ({judged:String} = 'yes'))
    AND ({text:String} = ''
         OR ((positionCaseInsensitiveUTF8(interactions.prompt, {text:String}) > 0
              OR positionCaseInsensitiveUTF8(interactions.prompt_messages, {text:String}) > 0
              OR positionCaseInsensitiveUTF8(interactions.completion, {text:String}) > 0)
             -- Implied by the match above, and checked on its rows only (AND evaluates it there):
             -- the ASCII-lowercased text holds the search text's ASCII runs in order. Wildcards
             -- stand for the rest: non-ASCII letters (their other case may differ in bytes), LIKE's
             -- own % _ \, and k, which positionCaseInsensitiveUTF8 can match to the Kelvin sign
             -- (U+212A). This is what the text_ngrams index (0007) reads to skip granules.
             AND lower(concat(interactions.prompt, '\n', interactions.prompt_messages, '\n', interactions.completion))
                 LIKE concat('%', replaceRegexpAll(lower({text:String}), '[^\\x00-\\x7F]+|[%_\\\\k]+', '%'), '%')))
        AS wanted
SELECT
    event_id,
    toString(run_id) AS run_id,
    step,
    group_id,
    ts,
    if(isFinite(reward) = 1, reward, NULL) AS reward,
    success,
    judged,
    substringUTF8(if(prompt != '', prompt, prompt_messages), 1, 200) AS prompt_start,
    substringUTF8(completion, 1, 200) AS completion_start
FROM interactions FINAL
WHERE wanted
    -- Only rows at least as new as the page's last one. The newest limit + offset matches are
    -- found without FINAL, where ClickHouse stops reading once it holds them (top-K filtering on
    -- ts, with 0007's ts_minmax index) while FINAL reads every granule the filters keep. Their
    -- oldest ts bounds the page when they are as many events (no redelivered copy among them);
    -- else the bound is 1900 (every row).
    AND ts >= (
        SELECT if(uniqExact(event_id) = count(), min(ts), toDateTime64('1900-01-01 00:00:00', 6, 'UTC'))
        FROM (
            SELECT event_id, ts FROM interactions WHERE wanted
            ORDER BY ts DESC, event_id LIMIT {limit:UInt32} + {offset:UInt32}
        )
    )
ORDER BY ts DESC, event_id
LIMIT {limit:UInt32} OFFSET {offset:UInt32}
