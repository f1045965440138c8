-- What the store was last computed with, e.g. the fingerprint of the configured aggregates:
-- when the config changes, the daemon recomputes them for every profile at start.
CREATE TABLE store_settings (
    name   text PRIMARY KEY,
    value  text NOT NULL
);
