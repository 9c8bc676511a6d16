"""People and work: users, AEs, procedures, patients, exams (the only code that changes an
exam's state), MPPS, the worklist, receipts, request forms, reports and critical findings.
Imports core only."""
