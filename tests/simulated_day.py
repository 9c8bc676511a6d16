"""A simulated day of a department: the exams registered, and what each modality sent.

Most exams' images arrive as they should; some carry a typo in the accession number or the
patient ID (typed at a console without worklist), some are another patient's images sent
under this exam (wrong patient), some are never sent. :func:`plan` makes the day;
:func:`images` writes each exam's files as the modality would have sent them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tests.dicomkit import make_ct

CORRECT, ACCESSION_TYPO, PATIENT_ID_TYPO, WRONG_PATIENT, NEVER_SENT = (
    "correct", "accession_typo", "patient_id_typo", "wrong_patient", "never_sent")
SURNAMES = [("张", "ZHANG"), ("王", "WANG"), ("李", "LI"), ("赵", "ZHAO"), ("陈", "CHEN"), ("刘", "LIU")]
GIVEN = [("伟", "WEI"), ("芳", "FANG"), ("娜", "NA"), ("敏", "MIN"), ("静", "JING"), ("强", "QIANG"),
         ("磊", "LEI"), ("洋", "YANG")]


@dataclass
class Case:
    kind: str
    patient_id: str
    name: str       # as registered
    dicom_name: str  # as a modality writes it
    sex: str
    birth_date: str  # YYYY-MM-DD
    accession: str = ""  # filled in once registered


def plan(seed: int = 7, correct: int = 30, accession_typos: int = 3, patient_id_typos: int = 2,
         wrong_patients: int = 2, never_sent: int = 3) -> list[Case]:
    rng = random.Random(seed)
    kinds = ([CORRECT] * correct + [ACCESSION_TYPO] * accession_typos + [PATIENT_ID_TYPO] * patient_id_typos
             + [WRONG_PATIENT] * wrong_patients + [NEVER_SENT] * never_sent)
    rng.shuffle(kinds)
    cases = []
    for n, kind in enumerate(kinds):
        (surname, surname_py), (given, given_py) = SURNAMES[n % 6], GIVEN[(n // 6) % 8]
        cases.append(Case(kind, f"D{n + 1:05d}", surname + given, f"{surname_py}^{given_py}", "MF"[n % 2],
                          f"{1950 + n}-0{1 + n % 9}-1{n % 10}"))
    return cases


def typo(value: str, position: int = -3) -> str:
    """One digit typed wrong."""
    digit = value[position]
    return value[:position] + str((int(digit) + 1) % 10) + (value[position + 1:] if position != -1 else "")


def other_patient(cases: list[Case], case: Case) -> Case:
    """The patient whose images were taken under ``case``'s exam: the next correct case."""
    index = cases.index(case)
    return next(c for c in cases[index + 1:] + cases[:index] if c.kind == CORRECT)


def images(cases: list[Case], directory: Path, per_exam: int = 2) -> list[Path]:
    """The files the modalities sent during the day (never-sent exams have none)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for case in cases:
        if case.kind == NEVER_SENT:
            continue
        header = {"accession": case.accession, "patient_id": case.patient_id, "name": case.dicom_name,
                  "sex": case.sex, "birth_date": case.birth_date.replace("-", "")}
        if case.kind == ACCESSION_TYPO:
            header["accession"] = typo(case.accession)
        elif case.kind == PATIENT_ID_TYPO:
            header["patient_id"] = typo(case.patient_id, -1)
        elif case.kind == WRONG_PATIENT:
            other = other_patient(cases, case)
            header.update(name=other.dicom_name, sex=other.sex, birth_date=other.birth_date.replace("-", ""))
        study = None
        for number in range(per_exam):
            path = directory / f"{case.patient_id}-{number}.dcm"
            ds = make_ct(path, study_uid=study, instance_number=number + 1, seed=number, **header)
            study = ds.StudyInstanceUID
            files.append(path)
    return files
