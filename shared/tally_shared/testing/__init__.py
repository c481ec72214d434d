"""Test support shared by every package's tests: the real broker and database, started once per session."""
