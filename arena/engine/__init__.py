"""The debate domain: pure code, no I/O and no Django."""
