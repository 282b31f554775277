"""Importing a board's CSV file: its format, the checks on every row, the swap."""
