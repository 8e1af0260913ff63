-- name: alerts
-- description: The alerts raised by the health checks, oldest first: time, run, step, rule, severity,
--   message and the evidence (JSON text).
-- param: runs Array(String) = [] -- run ids to include; empty: every run
-- param: limit UInt32 = 1000 -- at most this many alerts
SELECT ts, toString(run_id) AS run_id, step, rule, severity, message, evidence
FROM alerts FINAL
WHERE empty({runs:Array(String)}) OR has({runs:Array(String)}, alerts.run_id)
ORDER BY ts, run_id, rule
LIMIT {limit:UInt32}
