"""The gateway's HTTP: the lean ASGI layer and Quart behind it, forwarding to the
origin, the students' pages and replies, /metrics and the admin page. Imports
every layer below it; never ``waitroom.lookup``."""
