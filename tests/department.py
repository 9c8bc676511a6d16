"""A simulated busy department (issue 28): a few days of CT, DR and MR exams, and what each
station sent, with the errors a real department makes. Deterministic for a seed.

Patients share names (six surnames, eight given names), twins share a surname and a birth
date, patients come back for another exam. Each exam is registered the morning of its day and
acquired at its scheduled time on its station; most studies carry the exam's own values, and
some carry one of these errors:

- ``accession_typo``: the accession number typed with one digit wrong;
- ``patient_id_typo``: the patient ID typed with one character wrong;
- ``carried_over``: the previous patient's demographics left on the console, this exam's
  receipt scanned;
- ``same_name_picked``: the same-name patient's ID and birth date picked, this exam's receipt scanned;
- ``no_accession``: no accession number, the patient typed by hand.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

CORRECT = "correct"
ERRORS = ("accession_typo", "patient_id_typo", "carried_over", "same_name_picked", "no_accession")
SURNAMES = [("张", "ZHANG"), ("王", "WANG"), ("李", "LI"), ("赵", "ZHAO"), ("陈", "CHEN"), ("刘", "LIU")]
GIVEN = [("伟", "WEI"), ("芳", "FANG"), ("娜", "NA"), ("敏", "MIN"), ("静", "JING"), ("强", "QIANG"),
         ("磊", "LEI"), ("洋", "YANG")]
#: Station, DICOM modality, the desk's modality code, procedure, body part.
STATIONS = [("CT01", "CT", "CT", "Chest CT", "CHEST"), ("DR01", "DX", "DR", "Chest X-ray", "CHEST"),
            ("MR01", "MR", "MR", "Head MR", "HEAD")]


@dataclass
class Patient:
    patient_id: str
    name: str  # 张伟
    dicom_name: str  # ZHANG^WEI
    sex: str
    birth_date: str  # YYYY-MM-DD


@dataclass
class Exam:
    number: int
    patient: Patient
    station: tuple[str, str, str, str, str]
    scheduled: datetime  # UTC
    kind: str = CORRECT
    accession: str = ""  # once registered
    header: dict = field(default_factory=dict)  # what the station sends (set when acquired)


def _patients(rng: random.Random, count: int, twins: int) -> list[Patient]:
    people = []
    for n in range(count):
        (surname, surname_py), (given, given_py) = rng.choice(SURNAMES), rng.choice(GIVEN)
        birth = f"{rng.randint(1940, 2015)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        people.append(Patient(f"S{n:05d}", surname + given, f"{surname_py}^{given_py}", rng.choice("MF"), birth))
    for n in range(twins):  # a twin of an existing patient: same surname and birth date, another given name
        sibling = people[rng.randrange(count)]
        (given, given_py) = rng.choice([g for g in GIVEN if g[0] != sibling.name[1:]])
        people.append(Patient(f"T{n:05d}", sibling.name[0] + given, sibling.dicom_name.split("^")[0] + "^" + given_py,
                              rng.choice("MF"), sibling.birth_date))
    return people


def plan(seed: int = 28, days: int = 4, per_station_day: int = 20, patients: int = 160, twins: int = 15,
         errors_per_kind: int = 12, start: datetime = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)) -> list[Exam]:
    """The department's exams in acquisition order, each with its error kind."""
    rng = random.Random(seed)
    people = _patients(rng, patients, twins)
    exams: list[Exam] = []
    for day in range(days):
        for station in STATIONS:
            for slot in range(per_station_day):
                # 08:00 local (00:00 UTC) onwards, every 20 minutes; twins often come together
                when = start + timedelta(days=day, minutes=20 * slot + rng.randint(0, 5))
                exams.append(Exam(len(exams), rng.choice(people), station, when))
    exams.sort(key=lambda e: e.scheduled)
    candidates = [e for e in exams if e.number > 3]
    chosen = rng.sample(candidates, errors_per_kind * len(ERRORS))
    for n, exam in enumerate(chosen):
        exam.kind = ERRORS[n % len(ERRORS)]
    same_name = {}
    for person in people:
        same_name.setdefault(person.name, []).append(person)
    for exam in exams:  # a same-name mix-up needs a namesake
        if exam.kind == "same_name_picked" and len(same_name[exam.patient.name]) < 2:
            namesakes = [e for e in exams if e.kind == CORRECT and len(same_name[e.patient.name]) >= 2]
            swap = rng.choice(namesakes)
            exam.kind, swap.kind = CORRECT, "same_name_picked"
    for exam in exams:
        exam.namesake = next((p for p in same_name[exam.patient.name] if p is not exam.patient), None)
    return exams


def _typo(rng: random.Random, text: str, digits_only: bool = True) -> str:
    position = rng.randrange(len(text) - 5, len(text)) if digits_only else rng.randrange(1, len(text))
    old = text[position]
    new = rng.choice([c for c in "0123456789" if c != old])
    return text[:position] + new + text[position + 1:]


def header(rng: random.Random, exam: Exam, previous: Exam | None) -> dict:
    """What the station writes into the study's header for ``exam`` (``previous``: the exam
    acquired on the same station just before)."""
    person = exam.patient
    values = {"accession": exam.accession, "patient_id": person.patient_id, "name": person.dicom_name,
              "sex": person.sex, "birth_date": person.birth_date.replace("-", "")}
    if exam.kind == "accession_typo":
        values["accession"] = _typo(rng, exam.accession)
    elif exam.kind == "patient_id_typo":
        values["patient_id"] = _typo(rng, person.patient_id)
    elif exam.kind == "carried_over" and previous is not None:
        other = previous.patient
        values.update(patient_id=other.patient_id, name=other.dicom_name, sex=other.sex,
                      birth_date=other.birth_date.replace("-", ""))
    elif exam.kind == "same_name_picked":
        other = exam.namesake
        values.update(patient_id=other.patient_id, sex=other.sex, birth_date=other.birth_date.replace("-", ""))
    elif exam.kind == "no_accession":
        values["accession"] = ""
    return values
