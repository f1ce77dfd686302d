"""evaluate commands (registered on the shared app)."""
