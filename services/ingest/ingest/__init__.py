"""Tally ingest service."""
