-- name: store_status
-- description: The event tables of the store that hold rows (no row at all: nothing is stored yet),
--   from system.tables, so that it answers on a store without the schema as well.
-- param: tables Array(String) = ['interactions', 'train_steps', 'judge_scores', 'alerts', 'logits', 'reward_stats', 'group_stats'] -- the tables to look at
SELECT name AS table
FROM system.tables
WHERE database = currentDatabase() AND has({tables:Array(String)}, name) AND total_rows > 0
ORDER BY name
