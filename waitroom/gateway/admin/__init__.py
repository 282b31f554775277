"""The admin page: the blueprint and its login, sessions and CSRF."""
