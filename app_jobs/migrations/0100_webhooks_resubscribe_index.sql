-- A group_unsubscribe is not applied when a newer group_resubscribe of the
-- same address and group is already stored (events arrive out of order).
-- This partial index keeps that look-up fast as webhook_events grows.
CREATE INDEX IF NOT EXISTS webhook_events_group_resubscribe_idx
    ON webhook_events (lower(payload->>'email'), (payload->>'asm_group_id'), occurred_at)
    WHERE event = 'group_resubscribe';
