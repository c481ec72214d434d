"""The tally command."""
