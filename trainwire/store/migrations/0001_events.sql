-- 0001: one table per event type (see trainwire/store/schema.py for the column rules).
-- ReplacingMergeTree collapses rows with the same sorting key; every key ends in event_id and
-- a redelivered event is an identical row, so `SELECT ... FROM t FINAL` counts each event once.

-- One row per LLM call or sampled completion.
CREATE TABLE IF NOT EXISTS interactions
(
    event_id          String,
    run_id            LowCardinality(String),
    ts                DateTime64(6, 'UTC'),
    schema_version    UInt16,
    source_host       LowCardinality(String),
    source_process    UInt32,
    source_library    LowCardinality(String),
    prompt            String,
    prompt_messages   String,
    completion        String,
    reward            Nullable(Float64),
    rewards           Map(String, Float64),
    success           Bool,
    error             Nullable(String),
    latency_ms        Nullable(Float64),
    prompt_tokens     Nullable(Int64),
    completion_tokens Nullable(Int64),
    model             Nullable(String),
    step              Nullable(Int64),
    group_id          Nullable(String),
    group_index       Nullable(Int64),
    advantage         Nullable(Float64),
    metadata          String,
    inserted_at       DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (run_id, ifNull(step, -1), ts, event_id);

-- One row per trainer logging step.
CREATE TABLE IF NOT EXISTS train_steps
(
    event_id       String,
    run_id         LowCardinality(String),
    ts             DateTime64(6, 'UTC'),
    schema_version UInt16,
    source_host    LowCardinality(String),
    source_process UInt32,
    source_library LowCardinality(String),
    step           Int64,
    epoch          Nullable(Float64),
    loss           Nullable(Float64),
    grad_norm      Nullable(Float64),
    learning_rate  Nullable(Float64),
    metrics        Map(String, Float64),
    inserted_at    DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (run_id, step, ts, event_id);

-- Interactions sent to the LLM judge.
CREATE TABLE IF NOT EXISTS judge_requests
(
    event_id        String,
    run_id          LowCardinality(String),
    ts              DateTime64(6, 'UTC'),
    schema_version  UInt16,
    source_host     LowCardinality(String),
    source_process  UInt32,
    source_library  LowCardinality(String),
    interaction_id  String,
    prompt          String,
    prompt_messages String,
    completion      String,
    reference       Nullable(String),
    step            Nullable(Int64),
    reward          Nullable(Float64),
    metadata        String,
    inserted_at     DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (run_id, ifNull(step, -1), ts, event_id);

-- The judge's verdicts; success = false rows carry the raw output and the error, no score.
CREATE TABLE IF NOT EXISTS judge_scores
(
    event_id         String,
    run_id           LowCardinality(String),
    ts               DateTime64(6, 'UTC'),
    schema_version   UInt16,
    source_host      LowCardinality(String),
    source_process   UInt32,
    source_library   LowCardinality(String),
    interaction_id   String,
    judge_model      String,
    template_version String,
    success          Bool,
    score            Nullable(Float64),
    score_normalized Nullable(Float64),
    reasoning        Nullable(String),
    raw_output       String,
    error            Nullable(String),
    latency_ms       Nullable(Float64),
    step             Nullable(Int64),
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (run_id, ifNull(step, -1), ts, event_id);

-- Target-word logits per model, sample and answer position (the logits probe).
CREATE TABLE IF NOT EXISTS logits
(
    event_id       String,
    run_id         LowCardinality(String),
    ts             DateTime64(6, 'UTC'),
    schema_version UInt16,
    source_host    LowCardinality(String),
    source_process UInt32,
    source_library LowCardinality(String),
    model          String,
    sample_id      String,
    position       Int64,
    target_token   String,
    logit          Float64,
    probability    Float64,
    rank           Int64,
    token_id       Nullable(Int64),
    level          Nullable(Int64),
    correct        Nullable(Bool),
    inserted_at    DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (run_id, model, ifNull(level, -1), sample_id, position, target_token, event_id);

-- Health alerts raised by the workers.
CREATE TABLE IF NOT EXISTS alerts
(
    event_id       String,
    run_id         LowCardinality(String),
    ts             DateTime64(6, 'UTC'),
    schema_version UInt16,
    source_host    LowCardinality(String),
    source_process UInt32,
    source_library LowCardinality(String),
    rule           String,
    severity       String,
    message        String,
    step           Nullable(Int64),
    evidence       String,
    inserted_at    DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (run_id, ifNull(step, -1), ts, event_id);
