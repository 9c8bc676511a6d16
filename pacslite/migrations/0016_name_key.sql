-- Issue 14: a Query/Retrieve C-FIND by name narrows by the start of the pinyin written without
-- spaces ("wangxiaoming" for WANG^XIAOMING), through this index, instead of reading every patient.
CREATE INDEX patients_pinyin_key ON patients (REPLACE(name_pinyin, ' ', ''));
