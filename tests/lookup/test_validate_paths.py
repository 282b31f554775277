"""The importer's fast row check against the checked path it short-cuts.

``validate`` checks each row twice over: ``_fast_json`` only says yes (with the
row's JSON) or no, and a row it refuses goes through ``RowChecker._convert_checked``,
the reference, which names every problem. The two drifted once: the checked path's
``\\d`` took Arabic-Indic and other Unicode digits in subject and school codes that
the fast path refused. These tests pin them together: the same verdict and the same
(roll, dob, JSON) for random rows near the edges, Unicode digits included.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from waitroom.lookup import sample
from waitroom.lookup.importing.csvformat import ABSENT_MARK, COLUMNS, row_of
from waitroom.lookup.importing.validate import RowChecker, _fast_json, check_block

# The ASCII digits' equivalents in other scripts: str.isdigit() says yes to each,
# and so did the checked path's \d.
ZERO = {
    "arabic-indic": 0x0660,
    "extended arabic-indic": 0x06F0,
    "devanagari": 0x0966,
    "bengali": 0x09E6,
    "fullwidth": 0xFF10,
}
SUBJECT_BASES = tuple(range(9, len(COLUMNS), 6))
# Columns whose value is digits: roll, dob, school code, and each subject's code and marks.
DIGIT_COLUMNS = (1, 5, 6, *(b + k for b in SUBJECT_BASES for k in (0, 2, 3, 4)))
TRICKY = (
    "",
    " ",
    "AB",
    "041",
    "٠٤١",
    "۰۴۱",
    "0",
    "007",
    "100",
    "101",
    "-1",
    "A1",
    "E",
    "Z9",
    "PASS",
    "2007-02-30",
    "2008-05-14",
    "١٢٣٤",
    'a "quoted" name',
    "tab\there",
    "x" * 121,
)


def in_script(text: str, zero: int) -> str:
    return "".join(chr(zero + int(c)) if c.isascii() and c.isdigit() else c for c in text)


def checked(row: list[str]) -> tuple[str, str, bytes] | None:
    return RowChecker()._convert_checked(row, 2)


def fast(row: list[str]) -> tuple[str, str, bytes] | None:
    """The fast path's verdict as ``convert`` takes it: its JSON and a valid date."""
    body = _fast_json(row)
    if body is None or not RowChecker()._dob_valid(row[5]):
        return None
    return row[1], row[5], body


def fast_shape(row: list[str]) -> bool:
    """Whether the fast path handles the row's shape: no absent marks, and every
    subject given but perhaps the sixth (the rare shapes it leaves to the checked path)."""
    for base in SUBJECT_BASES:
        group = row[base : base + 6]
        if not any(group):
            if base != SUBJECT_BASES[-1]:
                return False
        elif ABSENT_MARK in group[2:5]:
            return False
    return True


@st.composite
def rows(draw: st.DrawFn) -> list[str]:
    """A sample candidate's row, then a few edits that may or may not spoil it."""
    row = row_of(sample.candidate(draw(st.integers(1, 50)), draw(st.integers(0, 10_000))))
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(("script", "tricky", "text", "blank", "absent")))
        if edit == "script":
            column = draw(st.sampled_from(DIGIT_COLUMNS))
            row[column] = in_script(row[column], ZERO[draw(st.sampled_from(sorted(ZERO)))])
        elif edit == "tricky":
            row[draw(st.integers(0, len(row) - 1))] = draw(st.sampled_from(TRICKY))
        elif edit == "text":
            text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
            row[draw(st.integers(0, len(row) - 1))] = draw(text)
        elif edit == "blank":
            base = draw(st.sampled_from(SUBJECT_BASES))
            row[base : base + 6] = [""] * 6
        else:
            base = draw(st.sampled_from(SUBJECT_BASES))
            row[base + 2 : base + 6] = [ABSENT_MARK] * 3 + [""]
    return row


def _subject_code_row(code: str) -> list[str]:
    row = row_of(sample.candidate(7, 1))
    row[SUBJECT_BASES[0]] = code
    return row


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows())
@example(_subject_code_row("٠٤١"))
@example(_subject_code_row("۰۴۱"))
def test_the_fast_path_gives_what_the_checked_path_gives(row: list[str]) -> None:
    reference = checked(row)
    quick = fast(row)
    if quick is not None:
        assert reference == quick
    elif fast_shape(row):
        assert reference is None, "the checked path takes a row of the fast path's shape"
    # What the importer keeps: the fast answer when there is one, else the reference.
    assert RowChecker().convert(row, 2) == reference


def test_arabic_indic_digits_are_refused_in_codes() -> None:
    good = row_of(sample.candidate(7, 1))
    assert checked(good) is not None and fast(good) == checked(good)
    for column in (6, SUBJECT_BASES[0], SUBJECT_BASES[2]):  # school_code, sub1/sub3 codes
        row = list(good)
        row[column] = in_script(row[column], ZERO["arabic-indic"])
        assert row[column] != good[column] and row[column].isdigit()
        assert fast(row) is None
        rows_checker = RowChecker()
        assert rows_checker.convert(row, 2) is None
        assert [p.column for p in rows_checker.problems] == [COLUMNS[column]]


def test_an_import_names_the_unicode_digits() -> None:
    good = row_of(sample.candidate(7, 2))
    bad = list(good)
    bad[SUBJECT_BASES[1]] = "٠٤١"
    bad[1] = str(int(good[1]) + 1)
    block = "\n".join(",".join(f'"{v}"' if "," in v else v for v in r) for r in (good, bad))
    result = check_block((block + "\n").encode(), 2, None)
    assert [line for line in result.lines] == [2]
    assert [(p.line, p.column, p.value) for p in result.problems] == [(3, "sub2_code", "٠٤١")]
