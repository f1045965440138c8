-- The demo CRM (MariaDB): contacts keyed by email, as a CRM team keeps them:
-- emails typed by hand (mixed case, stray spaces), a loyalty tier, preferences.

CREATE TABLE contacts (
    id                INT AUTO_INCREMENT PRIMARY KEY,
    email             VARCHAR(320) NOT NULL,
    phone             VARCHAR(40),
    loyalty_tier      ENUM('none', 'bronze', 'silver', 'gold', 'platinum') NOT NULL DEFAULT 'none',
    loyalty_points    INT NOT NULL DEFAULT 0,
    preferences       JSON,
    newsletter_opt_in TINYINT(1) NOT NULL DEFAULT 0,
    updated_at        TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    UNIQUE KEY contacts_email (email)
) ENGINE=InnoDB;

INSERT INTO contacts (email, phone, loyalty_tier, loyalty_points, preferences, newsletter_opt_in) VALUES
    (' Sally.Thomas@ACME.com ', '+44 20 7946 0001', 'gold', 1840, '{"language": "en", "sizes": ["M"]}', 1),
    ('george.bailey@example.org', NULL, 'bronze', 120, '{"language": "en"}', 0),
    ('ANNE.KRETCHMAR@example.com', '+49 30 1234567', 'silver', 610, '{"language": "de"}', 1),
    ('lena.meyer@example.de', '+49 89 7654321', 'none', 0, NULL, 0);

-- Written by Debezium's heartbeat.action.query so that a quiet CRM still moves the stream's
-- watermark (its commit time is the source's own clock).
CREATE TABLE IF NOT EXISTS cdc_heartbeat (
    id  INT PRIMARY KEY,
    ts  TIMESTAMP(3) NOT NULL
) ENGINE=InnoDB;
INSERT IGNORE INTO cdc_heartbeat VALUES (1, CURRENT_TIMESTAMP(3));
