"""segments generate (being written)."""
