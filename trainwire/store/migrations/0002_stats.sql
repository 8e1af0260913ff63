-- 0002: what the stats worker publishes (reward_stats, group_stats topics).

-- Rolling reward statistics per run, reward function and window.
CREATE TABLE IF NOT EXISTS reward_stats
(
    event_id        String,
    run_id          LowCardinality(String),
    ts              DateTime64(6, 'UTC'),
    schema_version  UInt16,
    source_host     LowCardinality(String),
    source_process  UInt32,
    source_library  LowCardinality(String),
    window_start_us Int64,
    window_end_us   Int64,
    window          String,
    reward_fn       String,
    step_start      Nullable(Int64),
    step_end        Nullable(Int64),
    count           Int64,
    nonfinite       Int64,
    mean            Nullable(Float64),
    std             Nullable(Float64),
    min             Nullable(Float64),
    max             Nullable(Float64),
    p10             Nullable(Float64),
    p50             Nullable(Float64),
    p90             Nullable(Float64),
    inserted_at     DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (run_id, window, reward_fn, window_start_us, ifNull(step_start, -1), event_id);

-- GRPO group statistics per run and step.
CREATE TABLE IF NOT EXISTS group_stats
(
    event_id               String,
    run_id                 LowCardinality(String),
    ts                     DateTime64(6, 'UTC'),
    schema_version         UInt16,
    source_host            LowCardinality(String),
    source_process         UInt32,
    source_library         LowCardinality(String),
    step                   Int64,
    interactions           Int64,
    groups                 Int64,
    zero_variance_groups   Int64,
    zero_variance_share    Nullable(Float64),
    mean_group_std         Nullable(Float64),
    reward_mean            Nullable(Float64),
    reward_std             Nullable(Float64),
    length_reward_corr     Nullable(Float64),
    judge_pairs            Int64,
    judge_pearson          Nullable(Float64),
    judge_spearman         Nullable(Float64),
    judge_median_agreement Nullable(Float64),
    inserted_at            DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (run_id, step, event_id);
