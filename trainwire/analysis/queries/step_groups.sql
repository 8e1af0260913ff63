-- name: step_groups
-- description: The GRPO groups of one run and step: group id, the prompt (of the group's first
--   interaction), size, interactions with a finite reward, their mean and population std, and
--   whether the group does not vary (at least two rewards and std <= zero_std_eps, as in
--   group_stats). Filters: zero-variance groups only, a text that the prompt or a completion
--   contains (case-insensitive); order by group id, best or worst mean reward first.
-- param: run String = '' -- the run id
-- param: step Int64 = 0 -- the training step
-- param: zero_variance_only Bool = false -- only the groups whose rewards do not vary
-- param: search String = '' -- only groups with this text in the prompt or a completion; empty: all
-- param: order String = 'group' -- the order of the groups
-- choices: order = group | best | worst
-- param: zero_std_eps Float64 = 1e-9 -- a group whose reward std is at most this does not vary
-- param: limit UInt32 = 500 -- at most this many groups
SELECT
    gid AS group_id,
    argMin(text, (ifNull(group_index, 0), event_id)) AS prompt,
    count() AS size,
    countIf(finite) AS rewarded,
    if(rewarded > 0, avgIf(r, finite), NULL) AS reward_mean,
    if(rewarded > 0, if(minIf(r, finite) = maxIf(r, finite), 0., stddevPopIf(r, finite)), NULL) AS reward_std,
    rewarded >= 2 AND reward_std <= {zero_std_eps:Float64} AS zero_variance
FROM
(
    SELECT
        assumeNotNull(group_id) AS gid, group_index, event_id,
        if(prompt != '', prompt, prompt_messages) AS text,
        {search:String} != ''
            AND (positionCaseInsensitiveUTF8(prompt, {search:String}) > 0
                 OR positionCaseInsensitiveUTF8(prompt_messages, {search:String}) > 0
                 OR positionCaseInsensitiveUTF8(completion, {search:String}) > 0) AS matched,
        isFinite(reward) = 1 AS finite, assumeNotNull(reward) AS r
    FROM interactions FINAL
    WHERE run_id = {run:String} AND step = {step:Int64} AND group_id IS NOT NULL
)
GROUP BY gid
HAVING (NOT {zero_variance_only:Bool} OR zero_variance) AND ({search:String} = '' OR countIf(matched) > 0)
ORDER BY
    if({order:String} = 'best', -ifNull(reward_mean, -inf), 0.),
    if({order:String} = 'worst', ifNull(reward_mean, inf), 0.),
    group_id
LIMIT {limit:UInt32}
