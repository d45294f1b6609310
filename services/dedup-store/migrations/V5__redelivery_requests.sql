-- Redeliveries the reconciler asked a sender for (docs/adr/0018): at most
-- one accepted request per delivery, whichever replica asked. The row is
-- written before the request is sent, so a crash in between leaves it
-- asked-for, never asked twice; `recovered_at` is set once the event is
-- stored.
CREATE TABLE redelivery_requests (
    source        TEXT        NOT NULL,
    event_uuid    TEXT        NOT NULL CHECK (length(event_uuid) BETWEEN 1 AND 255),
    -- The sender's id of the delivery that was redelivered (GitHub's
    -- delivery id, GitLab's hook event id).
    delivery_id   TEXT        NOT NULL,
    event_type    TEXT        NOT NULL,
    requested_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    state         TEXT        NOT NULL DEFAULT 'requesting'
                  CHECK (state IN ('requesting', 'requested', 'failed')),
    detail        TEXT,
    -- A request the sender refused or never answered is asked again on a
    -- later run, up to 3 times; one it accepted never is.
    attempts      INT         NOT NULL DEFAULT 1,
    recovered_at  TIMESTAMPTZ,
    PRIMARY KEY (source, event_uuid)
);
-- The unrecovered ones, counted after every run.
CREATE INDEX redelivery_requests_unrecovered_idx
    ON redelivery_requests (source, requested_at) WHERE recovered_at IS NULL;
