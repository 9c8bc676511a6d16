-- Pick-up tracking (取片 / 自助打印, issue 31): each time an exam's final report or its films
-- were handed out, at the desk or by a kiosk, by whom and when. A report counts as collected in
-- the version handed out (an amendment is collected again). Written by pacs.pickup.
CREATE TABLE handouts (
    id              INTEGER PRIMARY KEY,
    exam_ref        INTEGER NOT NULL REFERENCES exams(id),
    item            TEXT NOT NULL CHECK (item IN ('report', 'films')),
    report_version  INTEGER,                  -- the report's version handed out
    films           INTEGER,                  -- how many films were handed out
    place           TEXT NOT NULL CHECK (place IN ('desk', 'kiosk')),
    handed_at       TEXT NOT NULL,
    handed_by       TEXT NOT NULL,
    CHECK ((item = 'report') = (report_version IS NOT NULL)),
    CHECK ((item = 'films') = (films IS NOT NULL))
);
CREATE INDEX handouts_exam ON handouts (exam_ref, item, handed_at);
