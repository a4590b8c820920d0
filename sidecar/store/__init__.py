"""Persistence: the embedded SQLite database, its migrations, and one store module per table group."""
