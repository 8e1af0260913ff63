-- 0008: judge provenance. Every judge score carries what made it: the template's name and the
-- sha256 of its text (and few-shot examples), the mode (single: one request per completion;
-- group: one request per GRPO group), the parser version, the sampling parameters (JSON) and
-- config_id, a digest of all of them and the judge model. Scores stored before this migration
-- keep '' / '{}' there. Rescoring adds scores with another config_id beside the old ones; the
-- named query judge_compare compares two configurations on the interactions both scored.

ALTER TABLE judge_scores ADD COLUMN IF NOT EXISTS template_name String AFTER rewards;

ALTER TABLE judge_scores ADD COLUMN IF NOT EXISTS template_hash String AFTER template_name;

ALTER TABLE judge_scores ADD COLUMN IF NOT EXISTS mode String AFTER template_hash;

ALTER TABLE judge_scores ADD COLUMN IF NOT EXISTS parser_version String AFTER mode;

ALTER TABLE judge_scores ADD COLUMN IF NOT EXISTS sampling String DEFAULT '{}' AFTER parser_version;

ALTER TABLE judge_scores ADD COLUMN IF NOT EXISTS config_id String AFTER sampling;
