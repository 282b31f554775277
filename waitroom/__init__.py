"""waitroom: a virtual waiting room for exam-result releases."""

__version__ = "0.1.0"
