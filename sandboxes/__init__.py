"""sandboxes slice."""
