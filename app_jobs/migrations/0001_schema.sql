-- The email automation schema: events and their vendors, campaign templates,
-- scheduled emails, one delivery row per recipient with its send attempts,
-- the webhook events already applied, and the local suppression list.
-- A delivery moves queued -> sending -> sent, then on with SendGrid's events
-- (deferred, delivered, opened, clicked, or blocked, bounced, dropped);
-- failed means the app gave up on it.

CREATE TABLE events (
    id bigserial PRIMARY KEY,
    title text NOT NULL,
    starts_at timestamptz,
    venue text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The vendors of an event: the people the scheduled emails go to.
CREATE TABLE recipients (
    id bigserial PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    name text NOT NULL,
    email text NOT NULL,
    company text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX recipients_event_email_key ON recipients (event_id, lower(email));

CREATE TABLE email_templates (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    description text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE email_template_items (
    id bigserial PRIMARY KEY,
    template_id bigint NOT NULL REFERENCES email_templates (id) ON DELETE CASCADE,
    name text NOT NULL,
    subject_template text NOT NULL,
    body_template text NOT NULL,
    trigger_type text NOT NULL DEFAULT 'before_event',
    -- Minutes relative to the trigger (negative = before it).
    send_offset_minutes integer NOT NULL DEFAULT 0,
    position integer NOT NULL DEFAULT 0
);

CREATE TABLE scheduled_emails (
    id bigserial PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    template_id bigint REFERENCES email_templates (id) ON DELETE SET NULL,
    template_item_id bigint REFERENCES email_template_items (id) ON DELETE SET NULL,
    name text,
    subject_template text NOT NULL,
    body_template text NOT NULL,
    trigger_type text,
    scheduled_for timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'scheduled'
        CHECK (status IN ('scheduled', 'sending', 'sent', 'failed', 'cancelled')),
    sent_at timestamptz,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The sender's claim query: due rows still waiting.
CREATE INDEX scheduled_emails_due_idx ON scheduled_emails (scheduled_for, id)
    WHERE status = 'scheduled';
CREATE INDEX scheduled_emails_sending_idx ON scheduled_emails (id) WHERE status = 'sending';

CREATE TABLE email_deliveries (
    id bigserial PRIMARY KEY,
    scheduled_email_id bigint NOT NULL REFERENCES scheduled_emails (id) ON DELETE CASCADE,
    recipient_id bigint REFERENCES recipients (id) ON DELETE SET NULL,
    recipient_email text NOT NULL,
    recipient_name text,
    -- Rendered once when the delivery is created, so every attempt sends the same content.
    subject text,
    body_html text,
    body_text text,
    -- 1 for the first send; each soft-bounce retry is a new attempt (at most 4).
    attempt integer NOT NULL DEFAULT 1,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sending', 'sent', 'deferred', 'delivered', 'opened',
                          'clicked', 'blocked', 'bounced', 'dropped', 'failed')),
    sendgrid_message_id text,
    sending_started_at timestamptz,
    sent_at timestamptz,
    delivered_at timestamptz,
    opened_at timestamptz,
    clicked_at timestamptz,
    open_count integer NOT NULL DEFAULT 0,
    click_count integer NOT NULL DEFAULT 0,
    spam_reported_at timestamptz,
    unsubscribed_at timestamptz,
    bounce_type text,
    bounce_reason text,
    error text,
    -- Transient Mail Send failures (429, 5xx, timeouts) and crash re-sends of this attempt.
    send_errors integer NOT NULL DEFAULT 0,
    -- When a queued delivery may be sent again, or when a blocked one is retried.
    next_retry_at timestamptz,
    retry_jid text,
    needs_review boolean NOT NULL DEFAULT false,
    last_event_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX email_deliveries_email_recipient_key
    ON email_deliveries (scheduled_email_id, lower(recipient_email));
CREATE INDEX email_deliveries_queued_idx ON email_deliveries (next_retry_at, id)
    WHERE status = 'queued';
CREATE INDEX email_deliveries_sending_idx ON email_deliveries (sending_started_at)
    WHERE status = 'sending';
CREATE INDEX email_deliveries_blocked_idx ON email_deliveries (next_retry_at)
    WHERE status = 'blocked';
CREATE INDEX email_deliveries_message_idx ON email_deliveries (sendgrid_message_id);

-- One row per send attempt; events of an older attempt update only their row here.
CREATE TABLE email_delivery_attempts (
    delivery_id bigint NOT NULL REFERENCES email_deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    sendgrid_message_id text,
    status text NOT NULL,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX email_delivery_attempts_message_idx ON email_delivery_attempts (sendgrid_message_id);

-- Webhook events already applied; dedup_key makes a re-posted event a no-op.
CREATE TABLE webhook_events (
    id bigserial PRIMARY KEY,
    dedup_key text NOT NULL UNIQUE,
    sg_event_id text,
    sg_message_id text,
    event text NOT NULL,
    delivery_id bigint,
    attempt integer,
    occurred_at timestamptz,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_delivery_idx ON webhook_events (delivery_id, attempt);

CREATE TABLE suppressions (
    id bigserial PRIMARY KEY,
    email text NOT NULL,
    kind text NOT NULL
        CHECK (kind IN ('bounce', 'spam', 'unsubscribe', 'group_unsubscribe', 'invalid')),
    asm_group_id integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX suppressions_email_kind_group_key
    ON suppressions (lower(email), kind, coalesce(asm_group_id, 0));
