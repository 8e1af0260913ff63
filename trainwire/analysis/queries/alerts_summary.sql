-- name: alerts_summary
-- description: Alerts per run, rule and severity: how many, and the first and last step and time.
-- param: runs Array(String) = [] -- run ids to include; empty: every run
SELECT
    toString(run_id) AS run_id,
    rule,
    severity,
    count() AS alerts,
    min(step) AS first_step,
    max(step) AS last_step,
    min(ts) AS first_ts,
    max(ts) AS last_ts
FROM alerts FINAL
WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, alerts.run_id)
GROUP BY run_id, rule, severity
ORDER BY run_id, rule, severity
