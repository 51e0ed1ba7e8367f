"""runbooks slice."""
