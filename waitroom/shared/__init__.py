"""Used by both servers (the gateway and the lookup backend): the raw ASGI types,
the server runner, child processes, password hashes, the admission header, the
path patterns and the hashed static assets. Imports only ``waitroom.errors``."""
