"""routines slice."""
