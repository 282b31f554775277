"""What one gateway worker knows and decides: its snapshot of the line, where a
ticket stands, the door, tickets and passes, the abuse limits, the pacer, the
governor and the backend telemetry. Imports ``errors``, ``shared``, ``line`` and
``settings``; nothing about HTTP."""
