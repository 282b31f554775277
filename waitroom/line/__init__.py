"""The line in Redis, no HTTP: every key, the Lua scripts, the clients, the
line's state and the steps that change it, the release order, the admin's
controls and the coalescing of many callers' steps. Imports ``errors`` and
``shared``."""
