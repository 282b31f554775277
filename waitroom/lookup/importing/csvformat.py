"""The CSV file a board uploads: one row per candidate.

Format (also documented for boards in README.md, "Uploading results: the CSV format"):

* UTF-8, with or without a byte-order mark; LF or CRLF line ends; comma separated,
  fields quoted with double quotes when they contain a comma or a quote. No field
  may contain a line break.
* Line 1 is the header. Column names must all be present, exactly once each, and no
  others; their order is free.
* Identity columns: ``exam, roll_no, candidate_name, mother_name, father_name, dob,
  school_code, school_name, result``.
* Six subject groups ``subN_code, subN_name, subN_theory, subN_practical, subN_total,
  subN_grade`` for N = 1..6. Groups 1-5 are required; group 6 may be left entirely
  empty.

Rules per field are in :data:`RULES` and enforced by :mod:`waitroom.lookup.importing.importer`.
"""

from __future__ import annotations

import datetime as dt

from waitroom.lookup.marksheet import MAX_SUBJECTS, Marksheet, Subject

IDENTITY_COLUMNS: tuple[str, ...] = (
    "exam",
    "roll_no",
    "candidate_name",
    "mother_name",
    "father_name",
    "dob",
    "school_code",
    "school_name",
    "result",
)
SUBJECT_FIELDS: tuple[str, ...] = ("code", "name", "theory", "practical", "total", "grade")
SUBJECT_COLUMNS: tuple[tuple[str, ...], ...] = tuple(
    tuple(f"sub{n}_{field}" for field in SUBJECT_FIELDS) for n in range(1, MAX_SUBJECTS + 1)
)
COLUMNS: tuple[str, ...] = IDENTITY_COLUMNS + tuple(c for g in SUBJECT_COLUMNS for c in g)

ABSENT_MARK = "AB"
MAX_ROLL_DIGITS = 12
MAX_NAME_CHARS = 120

RULES: dict[str, str] = {
    "exam": "not empty, at most 120 characters",
    "roll_no": f"digits only, 1 to {MAX_ROLL_DIGITS} of them, unique in the file",
    "candidate_name": "not empty, at most 120 characters",
    "mother_name": "not empty, at most 120 characters",
    "father_name": "not empty, at most 120 characters",
    "dob": "a real date written YYYY-MM-DD, between 1950-01-01 and today",
    "school_code": "digits only, 1 to 10 of them",
    "school_name": "not empty, at most 120 characters",
    "result": "one of PASS, COMPARTMENT, ESSENTIAL REPEAT, ABSENT, RESULT WITHHELD, RESULT LATER",
    "subN_code": "digits only, 3 of them (e.g. 041)",
    "subN_name": "not empty, at most 120 characters",
    "subN_theory / subN_practical / subN_total": "whole numbers 0-100 with total = theory + "
    "practical and total <= 100; or all three AB when absent in the subject",
    "subN_grade": "one of A1 A2 B1 B2 C1 C2 D1 D2 E; empty when the subject marks are AB",
    "sub6_*": "all six empty when the candidate took five subjects",
}


def _mark(value: int | None) -> str:
    return ABSENT_MARK if value is None else str(value)


def row_of(sheet: Marksheet) -> list[str]:
    """The CSV fields for one marksheet, in :data:`COLUMNS` order."""
    row = [
        sheet.exam,
        sheet.roll,
        sheet.name,
        sheet.mother_name,
        sheet.father_name,
        sheet.dob.isoformat(),
        sheet.school_code,
        sheet.school_name,
        sheet.result,
    ]
    for i in range(MAX_SUBJECTS):
        if i < len(sheet.subjects):
            s: Subject = sheet.subjects[i]
            row += [s.code, s.name, _mark(s.theory), _mark(s.practical), _mark(s.total)]
            row.append(s.grade or "")
        else:
            row += [""] * len(SUBJECT_FIELDS)
    return row


def earliest_dob() -> dt.date:
    return dt.date(1950, 1, 1)
