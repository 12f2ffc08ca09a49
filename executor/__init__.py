"""Runs plans: the one place where bytes move, and the store they land in."""
