"""The lean result-lookup backend that sits behind the waiting room.

A server of its own: it imports only ``waitroom.errors`` and ``waitroom.shared``,
never the line, the room or the gateway."""
