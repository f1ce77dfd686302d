"""train commands (registered on the shared app)."""
