-- A profile is what its live source rows say (core/reconcile.py, core/rows.py): the store keeps
-- each row's current state, what it supplies with the version of each value's last real change,
-- and which person identifiers it claims.
CREATE TABLE source_rows (
    source_table text COLLATE "C" NOT NULL,         -- "<source>:<schema>.<table>"
    row_key      text COLLATE "C" NOT NULL,         -- the row's Kafka key as canonical JSON
    profile_id   bigint,                            -- NULL while its owner is unknown
    live         boolean NOT NULL,                  -- false: deleted, kept as a versioned tombstone
    version      text COLLATE "C" NOT NULL,         -- of the last event applied to the row
    claims       jsonb NOT NULL DEFAULT '[]',       -- [[type, value], ...] person identifiers
    owner        jsonb,                             -- [to, type, value]: what the row belongs to
    entity_kind  text COLLATE "C",
    entity_id    text COLLATE "C",
    attrs        jsonb NOT NULL DEFAULT '{}',       -- {name: [value, version of its last change]}
    PRIMARY KEY (source_table, row_key)
) WITH (fillfactor = 70);
-- An attribute whose winning row withdrew is recomputed from the profile's other live rows.
CREATE INDEX source_rows_profile ON source_rows (profile_id);

-- The live rows claiming an identifier (row tags "<table> <row key>"); `live` stays its summary.
ALTER TABLE identifiers ADD COLUMN claimants text[] COLLATE "C" NOT NULL DEFAULT '{}';
-- Per row tag, the version of that row's latest release of the identifier: a claim from another
-- table committed before that release overlapped a live claim, and proves the same person.
ALTER TABLE identifiers ADD COLUMN released jsonb NOT NULL DEFAULT '{}';
-- The row whose value an attribute holds (NULL for tombstones and restores).
ALTER TABLE profile_fields ADD COLUMN supplier text COLLATE "C";
-- The latest version at which a row withdrew a value of the attribute: a tombstone's version.
ALTER TABLE profile_fields ADD COLUMN withdrawn text COLLATE "C" NOT NULL DEFAULT '';
-- An entity whose owner is not known yet (a cart item before its cart) belongs to nobody.
ALTER TABLE entities ALTER COLUMN profile_id DROP NOT NULL;
CREATE INDEX entities_parent ON entities (parent_kind, parent_id) WHERE parent_id IS NOT NULL;
-- The row that proved a merge: it claimed identifiers of both profiles.
ALTER TABLE merges ADD COLUMN proof_table text, ADD COLUMN proof_row text;

-- Version keys now order by commit time, priority, source, and only then position (so two
-- sources' positions are never compared): commit/position/priority/source becomes
-- commit/priority/source/position/ (the empty tiebreak of a non-snapshot event).
CREATE FUNCTION pg_temp.reorder_version(v text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(v, '^([0-9a-f]{16})/([0-9a-f.]*)/([0-9a-f]{4})/(.*)$', '\1/\3/\4/\2/')
$$;
UPDATE profiles SET born = pg_temp.reorder_version(born);
-- Identifiers from before row tracking have no claimants on record: a row claiming one joins
-- its profile, as it joins one that only references named (their version is "never claimed").
UPDATE identifiers SET version = '';
UPDATE profile_fields SET version = pg_temp.reorder_version(version);
UPDATE entities SET version = pg_temp.reorder_version(version);
UPDATE field_history SET version = pg_temp.reorder_version(version);
