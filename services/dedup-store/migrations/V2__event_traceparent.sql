-- The full W3C traceparent of the request that stored the event, so the
-- task created from it joins the same trace as a child span.
ALTER TABLE events ADD COLUMN traceparent TEXT
    CHECK (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
