-- The per-row foreign-key checks on the three tables every batch writes cost about a tenth of
-- the store's time (each inserted row locks its profile row FOR KEY SHARE). Those rows are
-- only written by the reconcile transaction, under its advisory lock, which creates a profile
-- before anything points at it and re-points everything in the same transaction as a merge.
ALTER TABLE identifiers DROP CONSTRAINT identifiers_profile_id_fkey;
ALTER TABLE profile_fields DROP CONSTRAINT profile_fields_profile_id_fkey;
ALTER TABLE entities DROP CONSTRAINT entities_profile_id_fkey;
