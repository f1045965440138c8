-- Delivery (services/dispatcher.py): one row per trigger and destination that takes its type,
-- written with the outbox row. A dispatcher claims a due row under FOR UPDATE SKIP LOCKED and
-- leases it (due_at moves past the request's timeout, `lease` names the claim), so replicas
-- share the work and no row is out with two of them at once.
CREATE TABLE deliveries (
    destination     text COLLATE "C" NOT NULL,
    outbox_seq      bigint NOT NULL,
    profile_id      bigint,                         -- copied: one profile's rows go out in order
    status          text NOT NULL DEFAULT 'pending', -- pending, sent, dead, cancelled
    due_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease           uuid,                           -- the claim in flight, if any
    attempts        integer NOT NULL DEFAULT 0,
    first_queued_at timestamptz NOT NULL DEFAULT clock_timestamp(),  -- the maximum retry age counts from here
    last_attempt_at timestamptz,
    last_status     integer,                        -- the last answer's HTTP status
    last_error      text,                           -- why the last attempt failed, or why it was cancelled
    last_body       text,                           -- a bounded excerpt of the last failed answer
    done_at         timestamptz,
    PRIMARY KEY (destination, outbox_seq)
);
CREATE INDEX deliveries_due ON deliveries (destination, due_at, outbox_seq) WHERE status = 'pending';
CREATE INDEX deliveries_profile_queue ON deliveries (destination, profile_id, outbox_seq)
    WHERE status = 'pending';
CREATE INDEX deliveries_trigger ON deliveries (outbox_seq);

-- A destination that answered 410 Gone is disabled until `cdc-sync destinations enable`.
CREATE TABLE destinations (
    name            text COLLATE "C" PRIMARY KEY,
    disabled_at     timestamptz,
    disabled_reason text
);
