"""Data sources: the generated demo stream."""
