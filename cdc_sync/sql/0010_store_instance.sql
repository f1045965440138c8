-- The store's own id, drawn once: the Redis cache keeps its documents under it, so stores
-- that share a Redis database never read each other's entries.
INSERT INTO store_settings (name, value) VALUES ('instance', replace(gen_random_uuid()::text, '-', ''))
ON CONFLICT (name) DO NOTHING;
