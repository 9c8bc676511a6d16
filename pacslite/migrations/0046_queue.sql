-- Check-in and queue calling (签到、排队叫号, issue 31): each patient checked in for an exam
-- gets a number in the queue of the exam's room for the day (CT01-012); the room's
-- technologist calls, calls again, skips (the patient goes back after a few others) and starts
-- the exam. Waiting-room screens and check-in kiosks (no login) are opened with a key the
-- administrator makes; only its hash is kept. Written by ris.queue.
CREATE TABLE queue_entries (
    id           INTEGER PRIMARY KEY,
    exam_ref     INTEGER NOT NULL REFERENCES exams(id),
    room         TEXT NOT NULL,                    -- the station's AE title (or the modality code)
    day          TEXT NOT NULL,                    -- YYYY-MM-DD, the department's day
    number       INTEGER NOT NULL,
    rank         INTEGER NOT NULL,                 -- 0 emergency, 1 elderly or disabled, 2 the others
    position     REAL NOT NULL,                    -- the order within a rank (a skip moves it back)
    state        TEXT NOT NULL CHECK (state IN ('waiting', 'called', 'missed', 'started', 'left')),
    reason       TEXT NOT NULL DEFAULT '',         -- why the rank: emergency, elderly, disabled
    calls        INTEGER NOT NULL DEFAULT 0,
    called_at    TEXT,
    checked_in_at TEXT NOT NULL,
    checked_in_by TEXT NOT NULL,
    UNIQUE (room, day, number)
);
CREATE UNIQUE INDEX queue_entries_exam_day ON queue_entries (exam_ref, day);
CREATE INDEX queue_entries_room ON queue_entries (room, day, state, rank, position);

CREATE TABLE queue_screens (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('screen', 'kiosk')),
    name        TEXT NOT NULL,
    rooms       TEXT NOT NULL,                     -- room codes, comma-separated
    key_hash    TEXT NOT NULL UNIQUE,
    active      INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);
