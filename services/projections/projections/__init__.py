"""Tally projections service."""
