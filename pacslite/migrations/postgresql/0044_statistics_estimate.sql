-- The statistics' grouping (statistics._EXAM_GROUPS) makes about a hundred groups, not one per
-- exam as the planner guessed: it sorted two years of exams on disk (work_mem) to group them.
-- Multivariate distinct counts over the same columns and turnaround expression (written as the
-- translated statement has it, dialect.py) correct the guess: 530 → 365 ms at the paper's scale.
CREATE STATISTICS exams_statistics_groups_distinct (ndistinct) ON
    modality, source, station_ae,
    (CASE WHEN status <> 'cancelled' AND images_first_at IS NOT NULL AND reported_at IS NOT NULL
          THEN ROUND(((extract(epoch FROM reported_at::timestamptz)::double precision / 86400.0 + 2440587.5)
                      - (extract(epoch FROM images_first_at::timestamptz)::double precision / 86400.0 + 2440587.5)) * 24, 1) END),
    target_hours
    FROM exams;
ANALYZE exams;
