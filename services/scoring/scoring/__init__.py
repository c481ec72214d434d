"""Tally scoring service."""
