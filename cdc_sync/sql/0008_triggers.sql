-- Triggers (core/triggers.py): the stream's event time, durable timers, and the outbox they
-- write to, all in the transaction that applies the batch which caused them.

-- How far each partition of each consumer group has come in event time (core/watermark.py).
CREATE TABLE stream_progress (
    group_id        text COLLATE "C" NOT NULL,
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    source          text COLLATE "C" NOT NULL,   -- the Debezium topic prefix
    event_us        bigint NOT NULL DEFAULT 0,   -- newest source commit time processed
    caught_up_us    bigint NOT NULL DEFAULT 0,   -- the source's heartbeat time when last seen caught up
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, kafka_partition)
);

-- The newest commit time of each source's heartbeat table write that has been processed.
CREATE TABLE source_heartbeats (
    source      text COLLATE "C" PRIMARY KEY,
    commit_us   bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One timer per (rule, subject, version): a cart's last real change, or a profile window's
-- first change. Ended timers stay, with the state that ended them, for `triggers explain`.
CREATE TABLE trigger_timers (
    id           text COLLATE "C" PRIMARY KEY,   -- rule:subject:version
    rule         text COLLATE "C" NOT NULL,
    subject      text COLLATE "C" NOT NULL,
    version      text COLLATE "C" NOT NULL,
    profile_id   bigint,
    due_us       bigint,                         -- event time it fires at; NULL once ended
    state        text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    occurred_us  bigint,                         -- fired: the trigger's event time
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trigger_timers_due ON trigger_timers (due_us) WHERE state IN ('scheduled', 'held');
CREATE INDEX trigger_timers_subject ON trigger_timers (rule, subject);
CREATE INDEX trigger_timers_fired ON trigger_timers (rule, profile_id, occurred_us) WHERE state = 'fired';
CREATE INDEX trigger_timers_pending_profile ON trigger_timers (profile_id) WHERE state IN ('scheduled', 'held');

-- What fired, for delivery (the next stage). `seq` orders a profile's triggers.
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    id           uuid NOT NULL UNIQUE,           -- deterministic: the delivery's idempotency key
    type         text NOT NULL,
    profile_id   bigint,
    occurred_at  timestamptz NOT NULL,           -- event time
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_profile ON outbox (profile_id, seq);

-- Orders as checkouts: whose, for which cart, and the version they were first seen at (their
-- creation; a later status change of an old order is no new checkout). A merged-away
-- profile's orders are found through profiles.merged_into.
CREATE TABLE trigger_orders (
    order_id    text COLLATE "C" PRIMARY KEY,
    profile_id  bigint,
    cart_id     text COLLATE "C",
    version     text COLLATE "C" NOT NULL
);
CREATE INDEX trigger_orders_profile ON trigger_orders (profile_id);
CREATE INDEX trigger_orders_cart ON trigger_orders (cart_id) WHERE cart_id IS NOT NULL;
