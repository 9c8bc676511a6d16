"""A simulated busy department (issue 28): a few days of exams on several stations, and what
each station sent, with the errors a real department makes. Deterministic for a seed.

Patients share names (a few surnames and given names), twins share a surname and a birth
date, patients come back for another exam. Each exam is registered the morning of its day; its
station queries the worklist and acquires it near its scheduled time; most studies carry the
exam's own values, and some carry one of these errors:

- ``accession_typo``: the accession number typed with one digit wrong;
- ``patient_id_typo``: the patient ID typed with one character wrong;
- ``carried_over``: the previous patient's demographics left on the console, this exam's
  receipt scanned;
- ``same_name_picked``: the same-name patient's ID and birth date picked, this exam's receipt scanned;
- ``no_accession``: no accession number, the patient typed by hand;
- ``partial_transmission``: an accession or patient ID typo, and the study sent in two parts,
  the rest only after the station's next patient (the link dropped and was resent).

Some correct studies are sent in two parts too (``Exam.split``): they must be filed whole.

Two department mixes (:data:`MIXES`): ``general`` (one CT, one DR, one MR, each exam booked on
its station) and ``outpatient`` (a CT for three body parts, two DR rooms sharing an unassigned
DR worklist, an MR for knees and spines; fewer names, so namesakes are everywhere).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

CORRECT = "correct"
ERRORS = ("accession_typo", "patient_id_typo", "carried_over", "same_name_picked", "no_accession",
          "partial_transmission")
SURNAMES = [("张", "ZHANG"), ("王", "WANG"), ("李", "LI"), ("赵", "ZHAO"), ("陈", "CHEN"), ("刘", "LIU")]
GIVEN = [("伟", "WEI"), ("芳", "FANG"), ("娜", "NA"), ("敏", "MIN"), ("静", "JING"), ("强", "QIANG"),
         ("磊", "LEI"), ("洋", "YANG")]
#: A study is this many images; a split one is sent as the first, then the rest.
IMAGES = 3


@dataclass(frozen=True)
class Station:
    ae: str
    modality: str  # DICOM
    code: str  # the desk's modality code
    procedures: tuple[tuple[str, str, str], ...]  # (procedure, body part as the desk writes it, as DICOM does)
    booked: bool = True  # exams are registered on this station (else on no station: any of the modality's)


@dataclass(frozen=True)
class Mix:
    name: str
    stations: tuple[Station, ...]
    per_station_day: int
    slot_minutes: int
    patients: int
    twins: int
    surnames: int
    given: int
    days: int = 4


MIXES = {
    "general": Mix("general", (Station("CT01", "CT", "CT", (("Chest CT", "CHEST", "CHEST"),)),
                               Station("DR01", "DX", "DR", (("Chest X-ray", "CHEST", "CHEST"),)),
                               Station("MR01", "MR", "MR", (("Head MR", "HEAD", "HEAD"),))),
                   per_station_day=20, slot_minutes=20, patients=160, twins=15, surnames=6, given=8),
    "outpatient": Mix("outpatient", (Station("CT01", "CT", "CT", (("Head CT", "头颅", "HEAD"),
                                                                  ("Chest CT", "胸部", "CHEST"),
                                                                  ("Abdomen CT", "腹部", "ABDOMEN"))),
                                     Station("DR01", "DX", "DR", (("Chest X-ray", "胸部", "CHEST"),
                                                                  ("Knee X-ray", "膝关节", "KNEE")), booked=False),
                                     Station("DR02", "DX", "DR", (("Chest X-ray", "胸部", "CHEST"),
                                                                  ("Hand X-ray", "手", "HAND")), booked=False),
                                     Station("MR01", "MR", "MR", (("Knee MR", "KNEE", "KNEE"),
                                                                  ("Lumbar spine MR", "腰椎", "LSPINE")))),
                      per_station_day=18, slot_minutes=25, patients=90, twins=10, surnames=3, given=5, days=3),
}


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
    station: Station
    procedure: str
    body_part: str  # as the desk writes it
    dicom_body_part: str
    scheduled: datetime  # UTC
    kind: str = CORRECT
    split: bool = False  # sent in two parts
    accession: str = ""  # once registered
    namesake: Patient | None = None
    header: dict = field(default_factory=dict)  # what the station sends (set when acquired)


def _patients(rng: random.Random, mix: Mix) -> list[Patient]:
    surnames, given_names = SURNAMES[:mix.surnames], GIVEN[:mix.given]
    people = []
    for n in range(mix.patients):
        (surname, surname_py), (given, given_py) = rng.choice(surnames), rng.choice(given_names)
        birth = f"{rng.randint(1940, 2015)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        people.append(Patient(f"S{n:05d}", surname + given, f"{surname_py}^{given_py}", rng.choice("MF"), birth))
    for n in range(mix.twins):  # a twin of an existing patient: same surname and birth date, another given name
        sibling = people[rng.randrange(mix.patients)]
        (given, given_py) = rng.choice([g for g in given_names if g[0] != sibling.name[1:]])
        people.append(Patient(f"T{n:05d}", sibling.name[0] + given, sibling.dicom_name.split("^")[0] + "^" + given_py,
                              rng.choice("MF"), sibling.birth_date))
    return people


def plan(seed: int = 28, mix: Mix = MIXES["general"], errors_per_kind: int = 11, split_correct: int = 8,
         start: datetime = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)) -> list[Exam]:
    """The department's exams in acquisition order, each with its error kind."""
    rng = random.Random(seed)
    people = _patients(rng, mix)
    exams: list[Exam] = []
    for day in range(mix.days):
        for station in mix.stations:
            for slot in range(mix.per_station_day):
                # 08:00 local (00:00 UTC) onwards; twins often come together
                when = start + timedelta(days=day, minutes=mix.slot_minutes * slot + rng.randint(0, 5))
                procedure, body_part, dicom_body_part = rng.choice(station.procedures)
                exams.append(Exam(len(exams), rng.choice(people), station, procedure, body_part, dicom_body_part,
                                  when))
    exams.sort(key=lambda e: e.scheduled)
    candidates = [e for e in exams if e.number > 3]
    chosen = rng.sample(candidates, errors_per_kind * len(ERRORS) + split_correct)
    for n, exam in enumerate(chosen[:errors_per_kind * len(ERRORS)]):
        exam.kind = ERRORS[n % len(ERRORS)]
        exam.split = exam.kind == "partial_transmission"
    for exam in chosen[errors_per_kind * len(ERRORS):]:
        exam.split = True
    same_name: dict[str, list[Patient]] = {}
    for person in people:
        same_name.setdefault(person.name, []).append(person)
    for exam in exams:  # a same-name mix-up needs a namesake
        if exam.kind == "same_name_picked" and len(same_name[exam.patient.name]) < 2:
            namesakes = [e for e in exams if e.kind == CORRECT and not e.split and len(same_name[e.patient.name]) >= 2]
            swap = rng.choice(namesakes)
            exam.kind, swap.kind = CORRECT, "same_name_picked"
    for exam in exams:
        exam.namesake = next((p for p in same_name[exam.patient.name] if p is not exam.patient), None)
    return exams


def _typo(rng: random.Random, text: str) -> str:
    position = rng.randrange(len(text) - 5, len(text))
    old = text[position]
    new = rng.choice([c for c in "0123456789" if c != old])
    return text[:position] + new + text[position + 1:]


def header(rng: random.Random, exam: Exam, previous: Exam | None) -> dict:
    """What the station writes into the study's header for ``exam`` (``previous``: the exam
    acquired on the same station just before)."""
    person = exam.patient
    values = {"accession": exam.accession, "patient_id": person.patient_id, "name": person.dicom_name,
              "sex": person.sex, "birth_date": person.birth_date.replace("-", "")}
    kind = exam.kind
    if kind == "partial_transmission":
        kind = rng.choice(["accession_typo", "patient_id_typo"])
    if kind == "accession_typo":
        values["accession"] = _typo(rng, exam.accession)
    elif kind == "patient_id_typo":
        values["patient_id"] = _typo(rng, person.patient_id)
    elif kind == "carried_over" and previous is not None:
        other = previous.patient
        values.update(patient_id=other.patient_id, name=other.dicom_name, sex=other.sex,
                      birth_date=other.birth_date.replace("-", ""))
    elif kind == "same_name_picked":
        other = exam.namesake
        values.update(patient_id=other.patient_id, sex=other.sex, birth_date=other.birth_date.replace("-", ""))
    elif kind == "no_accession":
        values["accession"] = ""
    return values
