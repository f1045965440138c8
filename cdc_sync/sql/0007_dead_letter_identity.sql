-- A dead letter is one record: its position and its bytes. Redelivery of the same record stays
-- one row; a different record at a position seen before (the topic was recreated) gets its own
-- row instead of being dropped by a uniqueness conflict on the position alone.
ALTER TABLE dead_letters ADD COLUMN record_hash bytea;
UPDATE dead_letters SET record_hash = sha256(coalesce(sha256(key), '') || coalesce(sha256(value), ''));
ALTER TABLE dead_letters ALTER COLUMN record_hash SET NOT NULL;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_topic_kafka_partition_kafka_offset_key;
CREATE UNIQUE INDEX dead_letters_record ON dead_letters (topic, kafka_partition, kafka_offset, record_hash);
-- How often it failed: a replay that fails again counts, with its new reason.
ALTER TABLE dead_letters ADD COLUMN attempts integer NOT NULL DEFAULT 1;
