-- Statistics (issue 19): the workload per technologist and radiologist, per modality and day,
-- read from indexes: exams performed in a period, reports signed or written in a period.
CREATE INDEX exams_performed ON exams (performed_at, performed_by, modality, instance_count)
    WHERE performed_at IS NOT NULL;
CREATE INDEX report_versions_signed ON report_versions (signed_at, signed_by, exam_ref, version)
    WHERE signed_at IS NOT NULL;
CREATE INDEX report_versions_preliminary ON report_versions (preliminary_at, preliminary_by, exam_ref)
    WHERE preliminary_at IS NOT NULL;
