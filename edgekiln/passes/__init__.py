"""Graph passes, one per file.  Pipelines list them explicitly (compiler/pipelines.py)."""
