"""instruct commands (registered on the shared app)."""
