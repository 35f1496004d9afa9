"""Ingest: validate each landed batch and route it to accepted/ or quarantine/."""
