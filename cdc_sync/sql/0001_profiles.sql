-- The profile store: one row per person, versioned facts about them, their history.
-- A version is a text key whose string order is the fact's order (see core/mutations.Version).

CREATE TABLE profiles (
    id           bigserial PRIMARY KEY,
    born         text NOT NULL,                 -- smallest version of any fact about the person: older survives a merge
    merged_into  bigint REFERENCES profiles (id),
    aggregates   jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identifiers (
    type        text NOT NULL,
    value       text NOT NULL,
    profile_id  bigint NOT NULL REFERENCES profiles (id),
    live        boolean NOT NULL,               -- false: the rows that carried it moved on or were deleted
    version     text NOT NULL,
    PRIMARY KEY (type, value)
);
CREATE INDEX identifiers_profile ON identifiers (profile_id);

CREATE TABLE profile_fields (
    profile_id  bigint NOT NULL REFERENCES profiles (id),
    name        text NOT NULL,
    value       jsonb,
    deleted     boolean NOT NULL DEFAULT false, -- a versioned tombstone: an older update cannot revive it
    version     text NOT NULL,
    PRIMARY KEY (profile_id, name)
);

CREATE TABLE entities (
    kind         text NOT NULL,
    entity_id    text NOT NULL,
    profile_id   bigint NOT NULL REFERENCES profiles (id),
    parent_kind  text,
    parent_id    text,
    data         jsonb,
    deleted      boolean NOT NULL DEFAULT false,
    version      text NOT NULL,
    PRIMARY KEY (kind, entity_id)
);
CREATE INDEX entities_profile ON entities (profile_id, kind);

CREATE TABLE merges (
    id          bigserial PRIMARY KEY,
    survivor    bigint NOT NULL REFERENCES profiles (id),
    merged      bigint NOT NULL REFERENCES profiles (id),
    proof_type  text NOT NULL,                  -- the identifier both profiles carried
    proof_value text NOT NULL,
    merged_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE field_history (
    id           bigserial PRIMARY KEY,
    profile_id   bigint NOT NULL,
    field        text NOT NULL,
    old_value    jsonb,
    old_deleted  boolean,
    new_value    jsonb,
    new_deleted  boolean NOT NULL,
    version      text NOT NULL,
    commit_at    timestamptz NOT NULL,          -- source commit time, for --as-of
    topic        text,
    kafka_partition integer,
    kafka_offset bigint,
    cause        text NOT NULL DEFAULT 'change', -- change | merge | restore
    applied_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX field_history_profile ON field_history (profile_id, field, commit_at);

CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    key             bytea,
    value           bytea,
    error           text NOT NULL,              -- the error class: DecodeError, MappingError…
    reason          text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);
