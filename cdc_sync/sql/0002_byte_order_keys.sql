-- Versions, keys and names compare byte by byte: a version key's order is its byte order
-- (core/mutations.Version), which a locale's collation does not keep (en_US ignores '/' and '.'
-- at first level), and byte comparison is also much cheaper than the locale's on every upsert.
ALTER TABLE profiles ALTER COLUMN born TYPE text COLLATE "C";
ALTER TABLE identifiers ALTER COLUMN type TYPE text COLLATE "C",
                        ALTER COLUMN value TYPE text COLLATE "C",
                        ALTER COLUMN version TYPE text COLLATE "C";
ALTER TABLE profile_fields ALTER COLUMN name TYPE text COLLATE "C",
                           ALTER COLUMN version TYPE text COLLATE "C";
ALTER TABLE entities ALTER COLUMN kind TYPE text COLLATE "C",
                     ALTER COLUMN entity_id TYPE text COLLATE "C",
                     ALTER COLUMN parent_kind TYPE text COLLATE "C",
                     ALTER COLUMN parent_id TYPE text COLLATE "C",
                     ALTER COLUMN version TYPE text COLLATE "C";
ALTER TABLE field_history ALTER COLUMN field TYPE text COLLATE "C",
                          ALTER COLUMN version TYPE text COLLATE "C";

-- A merge re-points the aliases of the profile it folds away.
CREATE INDEX profiles_merged_into ON profiles (merged_into) WHERE merged_into IS NOT NULL;
