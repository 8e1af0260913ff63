-- name: audit_sampling
-- description: Audit: truncated sampling combined with importance-sampling correction (TRL issue
--   #6789). Over the run's train steps whose recorded sampling parameters (the sampling_args/* metrics
--   the trainer hook writes) truncate the distribution (top_p < 1, top_k > 0 or min_p > 0) while the
--   trainer corrects with importance sampling (sampling_args/importance_sampling_correction = 1, or it
--   logged sampling/importance_sampling_ratio/*): the steps, the first and last, the parameters (the
--   smallest top_p, the largest top_k and min_p; NULL when not recorded) and the importance-sampling
--   metrics TRL logged over them (mean of the means, smallest minimum, largest maximum; NULL when none).
-- param: run String = '' -- the run to audit
SELECT
    count() AS steps,
    min(step) AS step_first,
    max(step) AS step_last,
    minIfOrNull(metrics['sampling_args/top_p'], mapContains(metrics, 'sampling_args/top_p')) AS top_p,
    maxIfOrNull(metrics['sampling_args/top_k'], mapContains(metrics, 'sampling_args/top_k')) AS top_k,
    maxIfOrNull(metrics['sampling_args/min_p'], mapContains(metrics, 'sampling_args/min_p')) AS min_p,
    avgIfOrNull(metrics['sampling/importance_sampling_ratio/mean'],
          mapContains(metrics, 'sampling/importance_sampling_ratio/mean')) AS is_ratio_mean,
    minIfOrNull(metrics['sampling/importance_sampling_ratio/min'],
          mapContains(metrics, 'sampling/importance_sampling_ratio/min')) AS is_ratio_min,
    maxIfOrNull(metrics['sampling/importance_sampling_ratio/max'],
          mapContains(metrics, 'sampling/importance_sampling_ratio/max')) AS is_ratio_max
FROM train_steps FINAL
WHERE run_id = {run:String}
    AND (
        (mapContains(metrics, 'sampling_args/top_p') AND metrics['sampling_args/top_p'] < 1)
        OR metrics['sampling_args/top_k'] > 0
        OR metrics['sampling_args/min_p'] > 0
    )
    AND (
        metrics['sampling_args/importance_sampling_correction'] = 1
        OR mapContains(metrics, 'sampling/importance_sampling_ratio/mean')
    )
HAVING steps > 0
