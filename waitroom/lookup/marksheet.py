"""The data model of a CBSE-style marksheet and its one JSON shape.

The JSON produced by :meth:`Marksheet.to_json` is what the importer stores per
candidate and what ``POST /api/result`` returns byte for byte, so it is the contract:
change it and both the database and API clients change with it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# CBSE Class XII grades; a grade is blank when the candidate was absent in the subject.
GRADES: frozenset[str] = frozenset({"A1", "A2", "B1", "B2", "C1", "C2", "D1", "D2", "E"})

# Overall results a board declares. COMPARTMENT: may resit one subject in July.
# ESSENTIAL REPEAT: failed in more than one subject, repeats the year.
RESULTS: tuple[str, ...] = (
    "PASS",
    "COMPARTMENT",
    "ESSENTIAL REPEAT",
    "ABSENT",
    "RESULT WITHHELD",
    "RESULT LATER",
)

PASS_MARK = 33
MIN_SUBJECTS = 5
MAX_SUBJECTS = 6
MAX_MARKS = 100


def grade_for(total: int) -> str:
    """The grade band CBSE prints for a subject total out of 100."""
    for floor, grade in _GRADE_FLOORS:
        if total >= floor:
            return grade
    return "E"


_GRADE_FLOORS: tuple[tuple[int, str], ...] = (
    (91, "A1"),
    (81, "A2"),
    (71, "B1"),
    (61, "B2"),
    (51, "C1"),
    (41, "C2"),
    (33, "D1"),
    (21, "D2"),
)


@dataclass(slots=True)
class Subject:
    """One subject line. Marks are None when the candidate was absent ("AB")."""

    code: str
    name: str
    theory: int | None
    practical: int | None
    total: int | None
    grade: str | None

    @property
    def absent(self) -> bool:
        return self.total is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "theory": self.theory,
            "practical": self.practical,
            "total": self.total,
            "grade": self.grade,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Subject:
        return cls(d["code"], d["name"], d["theory"], d["practical"], d["total"], d["grade"])


@dataclass(slots=True)
class Marksheet:
    exam: str
    roll: str
    name: str
    mother_name: str
    father_name: str
    dob: dt.date
    school_code: str
    school_name: str
    subjects: tuple[Subject, ...]
    result: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "exam": self.exam,
            "roll": self.roll,
            "name": self.name,
            "mother_name": self.mother_name,
            "father_name": self.father_name,
            "dob": self.dob.isoformat(),
            "school": {"code": self.school_code, "name": self.school_name},
            "subjects": [s.to_dict() for s in self.subjects],
            "result": self.result,
        }

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Marksheet:
        return cls(
            exam=d["exam"],
            roll=d["roll"],
            name=d["name"],
            mother_name=d["mother_name"],
            father_name=d["father_name"],
            dob=dt.date.fromisoformat(d["dob"]),
            school_code=d["school"]["code"],
            school_name=d["school"]["name"],
            subjects=tuple(Subject.from_dict(s) for s in d["subjects"]),
            result=d["result"],
        )

    @classmethod
    def from_json(cls, blob: bytes | str) -> Marksheet:
        return cls.from_dict(json.loads(blob))


# One encoder for the whole process: compact, UTF-8 kept as is (names in Indian
# scripts stay readable and short), no cycle check because the input is a plain tree.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def dumps(obj: Mapping[str, Any]) -> bytes:
    """Serialise a marksheet dict exactly as the store and the API carry it."""
    return _ENCODER.encode(obj).encode("utf-8")
