-- 0007: data-skipping indexes for text searches over interactions (search_interactions, the web
-- UI's samples view).
--
-- text_ngrams holds, per granule (8,192 rows), a Bloom filter of the 4-byte n-grams of the
-- prompt, the prompt messages and the completion, ASCII-lowercased (lower() changes the bytes
-- A-Z only, so non-ASCII text keeps its byte positions). A query whose condition implies
-- `lower(concat(prompt, '\n', prompt_messages, '\n', completion)) LIKE pattern` reads only the
-- granules whose filter may hold every n-gram of the pattern's literal runs; it must keep its own
-- exact condition beside it, since a Bloom filter only rules granules out. A search text shorter
-- than 4 bytes (or whose runs are) cannot be ruled out and reads every granule.
--
-- Rows inserted from now on get the index at insert; MATERIALIZE INDEX builds it for the parts
-- already stored, as a background mutation that the migration does not wait for (chdb would: its
-- mutations_sync is 1). On a store of 10 M interactions it takes minutes; until it is done, a
-- search reads those parts in full and returns the same rows. A process that exits first leaves
-- it to the next one that opens the store.
ALTER TABLE interactions ADD INDEX IF NOT EXISTS text_ngrams
    lower(concat(prompt, '\n', prompt_messages, '\n', completion)) TYPE ngrambf_v1(4, 32768, 2, 0) GRANULARITY 1;

ALTER TABLE interactions MATERIALIZE INDEX text_ngrams SETTINGS mutations_sync = 0;

-- ts_minmax: each granule's first and last ts. A query ordered by ts with a LIMIT reads the
-- granules that can hold its newest rows first and skips the others (ClickHouse's top-K filtering;
-- search_interactions relies on it when a text is found in many rows). Cheap at insert.
ALTER TABLE interactions ADD INDEX IF NOT EXISTS ts_minmax ts TYPE minmax GRANULARITY 1;

ALTER TABLE interactions MATERIALIZE INDEX ts_minmax SETTINGS mutations_sync = 0;
