-- 0003: what the analysis queries (trainwire.analysis) read to stay fast on millions of interactions.
--
-- 1. Text lengths as materialized columns: computed once at insert, so length statistics read two
--    UInt32 columns instead of every prompt and completion (10x-50x less data). MATERIALIZE COLUMN
--    fills them for parts written before this migration (a mutation; safe to run again).
--
-- 2. reward_step_agg: per run, step and reward function ('total' and each key of the rewards map),
--    aggregate states kept by a materialized view over inserts into interactions, for dashboards
--    that poll per-step reward curves (query reward_by_step_fast).
--    Trade-off: a materialized view sees each INSERT block, before ReplacingMergeTree removes
--    duplicates, so an event delivered twice (the bus is at-least-once) is counted twice in
--    `row_count` and the sums. `event_ids` is uniqState(event_id) and stays right (exact per
--    cell below 65536 distinct events, barring 32-bit hash collisions), so row_count minus the
--    distinct event_ids tells how many duplicates a cell holds; reward_by_step (interactions FINAL) remains the exact reference.
--    The view covers interactions inserted after it was created. To backfill once, on a store
--    whose reward_step_agg is empty, run the SELECT of the view with `FROM interactions FINAL`
--    as INSERT INTO reward_step_agg.

ALTER TABLE interactions ADD COLUMN IF NOT EXISTS prompt_chars UInt32 MATERIALIZED lengthUTF8(prompt);

ALTER TABLE interactions ADD COLUMN IF NOT EXISTS completion_chars UInt32 MATERIALIZED lengthUTF8(completion);

ALTER TABLE interactions MATERIALIZE COLUMN prompt_chars;

ALTER TABLE interactions MATERIALIZE COLUMN completion_chars;

CREATE TABLE IF NOT EXISTS reward_step_agg
(
    run_id     LowCardinality(String),
    step       Int64,
    reward_fn  LowCardinality(String),
    row_count  SimpleAggregateFunction(sum, UInt64),
    event_ids  AggregateFunction(uniq, String),
    rewarded   SimpleAggregateFunction(sum, UInt64),
    reward_sum SimpleAggregateFunction(sum, Float64),
    reward_sq  SimpleAggregateFunction(sum, Float64),
    reward_min SimpleAggregateFunction(min, Nullable(Float64)),
    reward_max SimpleAggregateFunction(max, Nullable(Float64))
)
ENGINE = AggregatingMergeTree
ORDER BY (run_id, step, reward_fn);

CREATE MATERIALIZED VIEW IF NOT EXISTS reward_step_agg_mv TO reward_step_agg AS
SELECT
    run_id,
    ifNull(step, -1) AS step,
    reward_fn,
    count() AS row_count,
    uniqState(event_id) AS event_ids,
    countIf(isFinite(value) = 1) AS rewarded,
    sumIf(assumeNotNull(value), isFinite(value) = 1) AS reward_sum,
    sumIf(assumeNotNull(value) * assumeNotNull(value), isFinite(value) = 1) AS reward_sq,
    minIf(value, isFinite(value) = 1) AS reward_min,
    maxIf(value, isFinite(value) = 1) AS reward_max
FROM interactions
ARRAY JOIN
    arrayConcat(['total'], mapKeys(rewards)) AS reward_fn,
    arrayConcat([reward], arrayMap(v -> toNullable(v), mapValues(rewards))) AS value
GROUP BY run_id, step, reward_fn;
