"""A deterministic generator of realistic CBSE Class XII candidates.

Candidate ``k`` of seed ``s`` is a pure function of ``(s, k)``: its fields are drawn
from a 512-bit BLAKE2b digest of the pair rather than from one running
``random.Random`` stream, so a stress script can rebuild any candidate (roll, date of
birth, expected marks) in a few microseconds without generating the ones before it.
``random.Random(seed)`` draws the per-seed school list. Same seed, same count: a
byte-identical CSV file.

Roll numbers are dense: candidate ``k`` has roll ``ROLL_BASE + 1 + k`` (8 digits),
so the stress scripts can pick real candidates and the tests can pick rolls that
certainly do not exist.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import multiprocessing
import os
import random
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from waitroom.lookup.importing.csvformat import COLUMNS, row_of
from waitroom.lookup.marksheet import PASS_MARK, Marksheet, Subject, grade_for
from waitroom.shared.processes import die_with_parent

ROLL_BASE = 21_000_000
DEFAULT_EXAM = "CBSE Class XII 2026"
DEFAULT_STUDENTS = 100_000
DEFAULT_SEED = 2026

# (male first names, female first names, surnames) per region, so a candidate's
# family shares a surname tradition.
_REGIONS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (  # Hindi belt
        (
            "AARAV",
            "VIVAAN",
            "ADITYA",
            "ARJUN",
            "RAHUL",
            "ROHIT",
            "SAURABH",
            "AMIT",
            "RAJESH",
            "SURESH",
            "MANOJ",
            "VIKAS",
            "ANKIT",
            "PRASHANT",
            "DEEPAK",
            "SANJAY",
            "AYUSH",
            "KARAN",
        ),
        (
            "ANANYA",
            "DIYA",
            "SAANVI",
            "PRIYA",
            "POOJA",
            "NEHA",
            "SUNITA",
            "ANITA",
            "KAVITA",
            "REKHA",
            "SEEMA",
            "ANJALI",
            "SHIVANI",
            "KHUSHI",
            "MEENA",
            "SAROJ",
            "ISHITA",
            "RIYA",
        ),
        (
            "SHARMA",
            "VERMA",
            "GUPTA",
            "SINGH",
            "YADAV",
            "MISHRA",
            "TIWARI",
            "PANDEY",
            "SRIVASTAVA",
            "CHAUHAN",
            "AGARWAL",
            "JAISWAL",
            "KUMAR",
            "DUBEY",
            "TRIPATHI",
            "RAWAT",
        ),
    ),
    (  # Punjab, Haryana
        (
            "GURPREET",
            "HARPREET",
            "MANDEEP",
            "JASPREET",
            "AMANDEEP",
            "NAVJOT",
            "SUKHDEEP",
            "BALWINDER",
            "KULDEEP",
            "RAJINDER",
            "JASKARAN",
            "ARSHDEEP",
        ),
        (
            "SIMRAN",
            "HARLEEN",
            "JASLEEN",
            "MANPREET",
            "KULWINDER",
            "GURLEEN",
            "NAVNEET",
            "PARAMJIT",
            "RAJWANT",
            "AMRIT",
        ),
        (
            "SANDHU",
            "GILL",
            "DHILLON",
            "SIDHU",
            "GREWAL",
            "BRAR",
            "BAJWA",
            "MALHOTRA",
            "KHANNA",
            "ARORA",
            "HOODA",
            "DAHIYA",
        ),
    ),
    (  # Bengal, Odisha, Assam
        (
            "ARNAB",
            "SOUMYA",
            "DEBASHIS",
            "SUBHOJIT",
            "ANIRBAN",
            "TAPAS",
            "PRASENJIT",
            "SAYAN",
            "RITAM",
            "BISWAJIT",
            "SUDIPTA",
            "PRITAM",
            "BIKASH",
            "HIMANGSHU",
        ),
        (
            "ANWESHA",
            "SRIJITA",
            "MOUMITA",
            "RITUPARNA",
            "SUPARNA",
            "TANUSHREE",
            "PAYEL",
            "SWAGATA",
            "MADHUMITA",
            "ITISHREE",
            "BARNALI",
            "PRIYANKA",
        ),
        (
            "CHATTERJEE",
            "BANERJEE",
            "MUKHERJEE",
            "DAS",
            "GHOSH",
            "BOSE",
            "SEN",
            "DUTTA",
            "PATNAIK",
            "MOHANTY",
            "BARUAH",
            "SAIKIA",
            "MONDAL",
            "SAHA",
        ),
    ),
    (  # Tamil Nadu, Kerala
        (
            "KARTHIK",
            "ARUN",
            "SENTHIL",
            "PRAVEEN",
            "VIGNESH",
            "MURUGAN",
            "RAMESH",
            "HARISH",
            "ABHIJITH",
            "ANOOP",
            "JITHIN",
            "SREEJITH",
            "GOKUL",
            "SURYA",
        ),
        (
            "DIVYA",
            "LAKSHMI",
            "KAVYA",
            "MEENAKSHI",
            "SANGEETHA",
            "REVATHI",
            "ANJU",
            "ATHIRA",
            "SREELAKSHMI",
            "GAYATHRI",
            "PRIYADARSHINI",
            "NANDHINI",
        ),
        (
            "IYER",
            "IYENGAR",
            "PILLAI",
            "NAIR",
            "MENON",
            "KRISHNAN",
            "SUBRAMANIAN",
            "RAJAN",
            "NAMBIAR",
            "KURUP",
            "SUNDARAM",
            "VENKATESAN",
        ),
    ),
    (  # Andhra, Telangana, Karnataka
        (
            "SAI",
            "VENKAT",
            "SRINIVAS",
            "RAVI",
            "MAHESH",
            "NAVEEN",
            "PRAJWAL",
            "SHREYAS",
            "CHANDRA",
            "NAGARAJ",
            "KIRAN",
            "TEJA",
        ),
        (
            "SRAVANI",
            "LAVANYA",
            "SWATHI",
            "BHAVANA",
            "KEERTHANA",
            "SHRUTHI",
            "PADMA",
            "HARSHITHA",
            "SINDHU",
            "VANI",
            "DEEPIKA",
            "ASHWINI",
        ),
        (
            "REDDY",
            "RAO",
            "NAIDU",
            "CHOWDARY",
            "GOWDA",
            "HEGDE",
            "SHETTY",
            "BHAT",
            "KULKARNI",
            "VARMA",
            "SASTRY",
            "MURTHY",
        ),
    ),
    (  # Maharashtra, Gujarat, Rajasthan
        (
            "OMKAR",
            "TEJAS",
            "SIDDHESH",
            "PRATHAMESH",
            "NIKHIL",
            "HARSH",
            "DHRUV",
            "JAY",
            "PARTH",
            "YASH",
            "MAHENDRA",
            "DINESH",
            "BHAVESH",
            "KAMLESH",
        ),
        (
            "SAYALI",
            "PRAJAKTA",
            "SNEHA",
            "ASHWINI",
            "HETAL",
            "KRUPA",
            "NIDHI",
            "JANVI",
            "DHARA",
            "BHAVNA",
            "MANISHA",
            "SHWETA",
        ),
        (
            "PATIL",
            "DESHMUKH",
            "JOSHI",
            "KULKARNI",
            "PAWAR",
            "SHINDE",
            "PATEL",
            "SHAH",
            "MEHTA",
            "DESAI",
            "RATHORE",
            "SHEKHAWAT",
            "CHOUDHARY",
            "MEENA",
        ),
    ),
    (  # names common across India, including Muslim and Christian families
        (
            "MOHAMMED",
            "AYAAN",
            "FAIZAN",
            "IMRAN",
            "ZAID",
            "ABDUL",
            "SAMEER",
            "JOSEPH",
            "JOEL",
            "THOMAS",
            "ALEN",
            "SHAHID",
        ),
        (
            "AYESHA",
            "FATIMA",
            "ZOYA",
            "SANA",
            "NAZIA",
            "RUKHSAR",
            "MARIYA",
            "SHABANA",
            "TESSA",
            "ANNA",
            "REENA",
            "MERLIN",
        ),
        (
            "KHAN",
            "ANSARI",
            "SHAIKH",
            "QURESHI",
            "SIDDIQUI",
            "HUSSAIN",
            "MIRZA",
            "D'SOUZA",
            "FERNANDES",
            "MATHEW",
            "GEORGE",
            "VARGHESE",
        ),
    ),
)
# Rough shares of candidates per region above, out of 100.
_REGION_WEIGHTS = (34, 8, 12, 12, 12, 14, 8)

# code -> (name, theory max, practical/internal max)
SUBJECTS: dict[str, tuple[str, int, int]] = {
    "301": ("ENGLISH CORE", 80, 20),
    "302": ("HINDI CORE", 80, 20),
    "041": ("MATHEMATICS", 80, 20),
    "241": ("APPLIED MATHEMATICS", 80, 20),
    "042": ("PHYSICS", 70, 30),
    "043": ("CHEMISTRY", 70, 30),
    "044": ("BIOLOGY", 70, 30),
    "083": ("COMPUTER SCIENCE", 70, 30),
    "065": ("INFORMATICS PRACTICES", 70, 30),
    "030": ("ECONOMICS", 80, 20),
    "055": ("ACCOUNTANCY", 80, 20),
    "054": ("BUSINESS STUDIES", 80, 20),
    "027": ("HISTORY", 80, 20),
    "028": ("POLITICAL SCIENCE", 80, 20),
    "029": ("GEOGRAPHY", 70, 30),
    "037": ("PSYCHOLOGY", 70, 30),
    "039": ("SOCIOLOGY", 80, 20),
    "048": ("PHYSICAL EDUCATION", 70, 30),
    "049": ("PAINTING", 30, 70),
}

# (share out of 100, four core subjects after English, electives for the 5th/6th)
_STREAMS: tuple[tuple[int, tuple[str, ...], tuple[str, ...]], ...] = (
    (24, ("041", "042", "043"), ("083", "048", "030", "065", "302")),  # science PCM
    (20, ("042", "043", "044"), ("041", "048", "037", "302")),  # science PCB
    (30, ("055", "054", "030"), ("041", "241", "065", "048")),  # commerce
    (26, ("027", "028", "029"), ("030", "037", "039", "302", "048", "049")),  # humanities
)

_STREAM_WEIGHTS = tuple(s[0] for s in _STREAMS)

_SCHOOL_KINDS = (
    "KENDRIYA VIDYALAYA",
    "JAWAHAR NAVODAYA VIDYALAYA",
    "DELHI PUBLIC SCHOOL",
    "DAV PUBLIC SCHOOL",
    "GOVT. SR. SEC. SCHOOL",
    "SARVODAYA VIDYALAYA",
    "ST. JOSEPH'S CONVENT SCHOOL",
    "RYAN INTERNATIONAL SCHOOL",
    "SACRED HEART SR. SEC. SCHOOL",
    "SARASWATI VIDYA MANDIR",
    "MODERN SCHOOL",
    "ARMY PUBLIC SCHOOL",
)
_TOWNS = (
    "NEW DELHI",
    "LUCKNOW",
    "PATNA",
    "JAIPUR",
    "BHOPAL",
    "CHANDIGARH",
    "DEHRADUN",
    "KOLKATA",
    "BHUBANESWAR",
    "GUWAHATI",
    "CHENNAI",
    "KOCHI",
    "THIRUVANANTHAPURAM",
    "HYDERABAD",
    "BENGALURU",
    "PUNE",
    "MUMBAI",
    "AHMEDABAD",
    "INDORE",
    "VARANASI",
    "PRAYAGRAJ",
    "RANCHI",
    "NAGPUR",
    "KOTA",
    "AJMER",
    "NOIDA",
    "GURUGRAM",
    "MEERUT",
    "AGRA",
    "SURAT",
)
_SCHOOLS_PER_SEED = 1500
_STUDENTS_PER_SCHOOL_BLOCK = 97  # consecutive rolls sit in the same school, as at CBSE

_DOB_FIRST = dt.date(2006, 6, 1)
_DOB_SPAN_DAYS = (dt.date(2009, 5, 31) - _DOB_FIRST).days + 1


def roll_of(k: int) -> str:
    """The roll number of candidate ``k`` (0-based)."""
    return str(ROLL_BASE + 1 + k)


def index_of(roll: str) -> int:
    """The inverse of :func:`roll_of`; no check that such a candidate was generated."""
    return int(roll) - ROLL_BASE - 1


@lru_cache(maxsize=8)
def schools(seed: int) -> tuple[tuple[str, str], ...]:
    """The (code, name) list of schools for a seed."""
    rng = random.Random(seed)
    codes = rng.sample(range(10_000, 100_000), _SCHOOLS_PER_SEED)
    out = []
    for code in codes:
        kind = rng.choice(_SCHOOL_KINDS)
        town = rng.choice(_TOWNS)
        number = f" NO. {rng.randint(1, 4)}" if kind == "KENDRIYA VIDYALAYA" else ""
        out.append((f"{code:05d}", f"{kind}{number}, {town}"))
    return tuple(out)


class _Draws:
    """Successive uniform integers carved out of one big hash value."""

    __slots__ = ("h",)

    def __init__(self, seed: int, k: int) -> None:
        digest = hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=64).digest()
        self.h = int.from_bytes(digest, "big")

    def below(self, n: int) -> int:
        self.h, r = divmod(self.h, n)
        return r

    def pick(self, items: tuple[str, ...]) -> str:
        self.h, r = divmod(self.h, len(items))
        return items[r]

    def weighted(self, weights: tuple[int, ...]) -> int:
        r = self.below(sum(weights))
        for i, w in enumerate(weights):
            if r < w:
                return i
            r -= w
        raise AssertionError(f"weights {weights} exhausted")  # unreachable by construction


def _subject(d: _Draws, code: str, target: int, fail: bool) -> Subject:
    name, tmax, pmax = SUBJECTS[code]
    # Internal/practical marks run generous at CBSE; the theory paper sorts people.
    practical = pmax - d.below(pmax // 4 + 1)
    if fail:
        target = 8 + d.below(PASS_MARK - 8)
        practical = min(practical, target * 2 // 3)
    theory = min(tmax, max(0, target - practical))
    total = theory + practical
    return Subject(code, name, theory, practical, total, grade_for(total))


def candidate(seed: int, k: int, exam: str = DEFAULT_EXAM) -> Marksheet:
    """Candidate ``k`` (0-based) of the sample generated with ``seed``."""
    d = _Draws(seed, k)
    males, females, surnames = _REGIONS[d.weighted(_REGION_WEIGHTS)]
    surname = d.pick(surnames)
    first = d.pick(males) if d.below(2) else d.pick(females)
    mother = f"{d.pick(females)} {surname}"
    father = f"{d.pick(males)} {surname}"
    dob = _DOB_FIRST + dt.timedelta(days=d.below(_DOB_SPAN_DAYS))
    school_code, school_name = schools(seed)[
        (k // _STUDENTS_PER_SCHOOL_BLOCK * 7919 + seed) % _SCHOOLS_PER_SEED
    ]

    _, core, electives = _STREAMS[d.weighted(_STREAM_WEIGHTS)]
    first_elective = d.below(len(electives))
    codes = ["301", *core, electives[first_elective]]
    if d.below(100) < 35:  # a sixth, additional subject
        rest = electives[:first_elective] + electives[first_elective + 1 :]
        codes.append(d.pick(rest))

    # Shares of results: roughly what CBSE Class XII declares (about 88% pass).
    roll_die = d.below(1000)
    if roll_die < 8:
        subjects = tuple(Subject(c, SUBJECTS[c][0], None, None, None, None) for c in codes)
        result = "ABSENT"
    else:
        fails = 0 if roll_die >= 110 else (2 + d.below(2) if roll_die < 25 else 1)
        failing: set[int] = set()
        while len(failing) < fails:
            failing.add(d.below(len(codes)))
        ability = 45 + d.below(50)
        subjects = tuple(
            _subject(d, code, min(100, max(PASS_MARK, ability + d.below(21) - 10)), i in failing)
            for i, code in enumerate(codes)
        )
        result = "PASS" if fails == 0 else ("COMPARTMENT" if fails == 1 else "ESSENTIAL REPEAT")
    return Marksheet(
        exam,
        roll_of(k),
        f"{first} {surname}",
        mother,
        father,
        dob,
        school_code,
        school_name,
        subjects,
        result,
    )


def candidates(seed: int, n: int, exam: str = DEFAULT_EXAM) -> Iterator[Marksheet]:
    for k in range(n):
        yield candidate(seed, k, exam)


def _csv_block(seed: int, exam: str, start: int, stop: int) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        row_of(candidate(seed, k, exam)) for k in range(start, stop)
    )
    return out.getvalue()


def _csv_block_args(args: tuple[int, str, int, int]) -> str:
    return _csv_block(*args)


def write_csv(path: Path, n: int, seed: int = DEFAULT_SEED, exam: str = DEFAULT_EXAM) -> None:
    """Write ``n`` candidates as the upload CSV; replaces ``path`` only once complete.

    Large samples are generated in blocks on every core; blocks come back in order,
    so the file is byte-identical to a single-process run.
    """
    block = 20_000
    jobs = [(seed, exam, start, min(n, start + block)) for start in range(0, n, block)]
    tmp = path.with_name(f".{path.name}.writing-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow(COLUMNS)
            workers = min(os.cpu_count() or 1, len(jobs))
            if workers <= 1:
                for job in jobs:
                    f.write(_csv_block(*job))
            else:
                with multiprocessing.get_context("fork").Pool(workers, die_with_parent) as pool:
                    for text in pool.imap(_csv_block_args, jobs):
                        f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
