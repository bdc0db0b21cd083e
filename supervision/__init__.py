"""Supervision trees: supervisors, dynamic supervisors, restart intensity, backoff."""
