-- The demo shop (Postgres): users, catalogue, carts, orders, consents.
-- Replica identity FULL everywhere: triggers and history need before-images.

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL,
    first_name  text,
    last_name   text,
    phone       text,
    city        text,
    country     char(2),
    birth_date  date,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE products (
    id        bigserial PRIMARY KEY,
    sku       text NOT NULL UNIQUE,
    name      text NOT NULL,
    category  text NOT NULL,
    price     numeric(10, 2) NOT NULL,
    currency  char(3) NOT NULL DEFAULT 'EUR'
);

CREATE TABLE carts (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    status      text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'checked_out', 'emptied')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cart_items (
    id          bigserial PRIMARY KEY,
    cart_id     bigint NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    product_id  bigint NOT NULL REFERENCES products (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(10, 2) NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    cart_id     bigint REFERENCES carts (id),
    status      text NOT NULL DEFAULT 'placed'
                CHECK (status IN ('placed', 'paid', 'shipped', 'cancelled', 'refunded')),
    total       numeric(12, 2) NOT NULL,
    currency    char(3) NOT NULL DEFAULT 'EUR',
    placed_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id  bigint NOT NULL REFERENCES products (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(10, 2) NOT NULL
);

CREATE TABLE consents (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    channel     text NOT NULL CHECK (channel IN ('email', 'sms')),
    purpose     text NOT NULL CHECK (purpose IN ('marketing', 'transactional')),
    granted     boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, channel, purpose)
);

-- Written by Debezium's heartbeat.action.query so that a quiet database still
-- moves the replication slot and the stream's watermark.
CREATE TABLE cdc_heartbeat (
    id  integer PRIMARY KEY,
    ts  timestamptz NOT NULL
);
INSERT INTO cdc_heartbeat VALUES (1, now());

ALTER TABLE users REPLICA IDENTITY FULL;
ALTER TABLE products REPLICA IDENTITY FULL;
ALTER TABLE carts REPLICA IDENTITY FULL;
ALTER TABLE cart_items REPLICA IDENTITY FULL;
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE order_items REPLICA IDENTITY FULL;
ALTER TABLE consents REPLICA IDENTITY FULL;

-- Seed data.
INSERT INTO products (sku, name, category, price) VALUES
    ('TEE-BLK-M', 'Organic tee, black, M', 'apparel', 24.90),
    ('TEE-WHT-L', 'Organic tee, white, L', 'apparel', 24.90),
    ('MUG-CER-01', 'Ceramic mug', 'home', 12.50),
    ('BAG-CAN-01', 'Canvas tote bag', 'accessories', 18.00),
    ('SOCK-WL-3', 'Wool socks, 3 pairs', 'apparel', 21.00),
    ('NB-A5-DOT', 'Dotted notebook A5', 'stationery', 9.90),
    ('LAMP-DSK-1', 'Desk lamp', 'home', 59.00),
    ('CAP-BLU-01', 'Baseball cap, blue', 'accessories', 19.50);

INSERT INTO users (email, first_name, last_name, phone, city, country, birth_date) VALUES
    ('sally.thomas@acme.com', 'Sally', 'Thomas', '+44 20 7946 0001', 'London', 'GB', '1988-03-14'),
    ('george.bailey@example.org', 'George', 'Bailey', NULL, 'Bedford Falls', 'US', '1975-12-01'),
    ('edward.walker@example.net', 'Edward', 'Walker', '+1 555 0100', 'Chicago', 'US', NULL),
    ('anne.kretchmar@example.com', 'Anne', 'Kretchmar', '+49 30 1234567', 'Berlin', 'DE', '1992-07-22'),
    ('mei.tanaka@example.jp', 'Mei', 'Tanaka', NULL, 'Osaka', 'JP', '1999-01-05');

INSERT INTO consents (user_id, channel, purpose, granted) VALUES
    (1, 'email', 'marketing', true),
    (2, 'email', 'marketing', false),
    (3, 'email', 'marketing', true),
    (4, 'email', 'marketing', true),
    (1, 'email', 'transactional', true);

INSERT INTO carts (user_id, status) VALUES (1, 'checked_out'), (2, 'open'), (4, 'open');
INSERT INTO cart_items (cart_id, product_id, quantity, unit_price) VALUES
    (1, 1, 2, 24.90), (1, 3, 1, 12.50),
    (2, 7, 1, 59.00),
    (3, 5, 1, 21.00), (3, 6, 3, 9.90);
INSERT INTO orders (user_id, cart_id, status, total) VALUES (1, 1, 'paid', 62.30);
INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (1, 1, 2, 24.90), (1, 3, 1, 12.50);
