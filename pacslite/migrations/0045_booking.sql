-- Booking (预约, issue 31): each station's weekly timetable of slots, the days it is closed, and
-- each exam's bookings with their history (a rebooking ends the old row as 'moved', a
-- cancellation as 'cancelled'; once its day is over, 'kept' if the exam was started, else
-- 'no_show'). Written by ris.booking.
CREATE TABLE booking_hours (
    id            INTEGER PRIMARY KEY,
    station_ae    TEXT NOT NULL,
    weekday       INTEGER NOT NULL CHECK (weekday BETWEEN 0 AND 6),   -- Monday 0
    starts        TEXT NOT NULL,                                      -- HH:MM, the department's time
    ends          TEXT NOT NULL,
    slot_minutes  INTEGER NOT NULL CHECK (slot_minutes BETWEEN 5 AND 240),
    capacity      INTEGER NOT NULL CHECK (capacity BETWEEN 1 AND 50),
    updated_at    TEXT NOT NULL
);
CREATE INDEX booking_hours_station ON booking_hours (station_ae, weekday, starts);

-- A closed day: one station's (station_ae), or every station's ('': a public holiday).
CREATE TABLE booking_closed (
    id          INTEGER PRIMARY KEY,
    station_ae  TEXT NOT NULL DEFAULT '',
    day         TEXT NOT NULL,                                        -- YYYY-MM-DD
    reason      TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    UNIQUE (station_ae, day)
);
CREATE INDEX booking_closed_day ON booking_closed (day);

CREATE TABLE bookings (
    id          INTEGER PRIMARY KEY,
    exam_ref    INTEGER NOT NULL REFERENCES exams(id),
    station_ae  TEXT NOT NULL,
    slot_at     TEXT NOT NULL,                                        -- the slot's start
    status      TEXT NOT NULL CHECK (status IN ('booked', 'moved', 'cancelled', 'kept', 'no_show')),
    overbooked  INTEGER NOT NULL DEFAULT 0,
    booked_at   TEXT NOT NULL,
    booked_by   TEXT NOT NULL,
    ended_at    TEXT,
    ended_by    TEXT,
    end_reason  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX bookings_slot ON bookings (station_ae, slot_at) WHERE status = 'booked';
CREATE INDEX bookings_open ON bookings (slot_at) WHERE status = 'booked';
CREATE UNIQUE INDEX bookings_current ON bookings (exam_ref) WHERE status = 'booked';
CREATE INDEX bookings_exam ON bookings (exam_ref, id);
