"""Model and data loading, and atomic writes."""
