-- HL7 v2 (issue 29): the messages the hospital information system sends, and its orders.
--
-- Every inbound message is kept as it arrived (its bytes), with its outcome (AA, AE, AR), the
-- reason and the acknowledgement sent. A message is applied once: a repeat of an accepted one
-- (the same MSH-10 from the same sender) is answered with the same acknowledgement. Written by
-- ris.messages only, in the transaction of the change the message made.
CREATE TABLE hl7_messages (
    id              INTEGER PRIMARY KEY,
    sender          TEXT NOT NULL,               -- MSH-3^MSH-4: sending application and facility
    control_id      TEXT NOT NULL,               -- MSH-10
    message_type    TEXT NOT NULL,               -- MSH-9, as ADT^A04
    address         TEXT NOT NULL DEFAULT '',
    charset         TEXT NOT NULL DEFAULT '',    -- how it was decoded
    raw             BLOB NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('AA', 'AE', 'AR')),
    error           TEXT NOT NULL DEFAULT '',    -- the reason, for AE and AR
    error_code      TEXT NOT NULL DEFAULT '',    -- HL7 table 0357
    ack             BLOB NOT NULL DEFAULT '',
    patient_id      TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '',
    attempts        INTEGER NOT NULL DEFAULT 1,
    received_at     TEXT NOT NULL,
    processed_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX hl7_messages_control ON hl7_messages (sender, control_id);
CREATE INDEX hl7_messages_failed ON hl7_messages (id) WHERE outcome <> 'AA';
CREATE INDEX hl7_messages_received ON hl7_messages (received_at);

-- An order placed by the HIS: its placer order number (ORC-2) and the placer application
-- (MSH-3), so that a change or cancellation finds the exam; and when the patient checked in at
-- the desk (签到): an ordered exam reaches the worklist only then.
ALTER TABLE exams ADD COLUMN placer_order_number TEXT;
ALTER TABLE exams ADD COLUMN placer_application TEXT;
ALTER TABLE exams ADD COLUMN checked_in_at TEXT;
CREATE UNIQUE INDEX exams_placer_order ON exams (placer_application, placer_order_number)
    WHERE placer_order_number IS NOT NULL;
