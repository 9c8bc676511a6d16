-- Registration (issue 19): the patient's resident ID card number (居民身份证号), optional,
-- validated; a desk may find a patient by it.
ALTER TABLE patients ADD COLUMN national_id TEXT;
CREATE INDEX patients_national_id ON patients (national_id) WHERE national_id IS NOT NULL;
