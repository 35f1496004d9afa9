"""Ingest: validate each landed batch or label file and route it to the accepted store or quarantine."""
