"""Outcome ingestion, the delayed-reward joiner and customer-level value."""
