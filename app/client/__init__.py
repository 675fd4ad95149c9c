"""The command-line client: ``space-cloud login|list|get|put|delete|peers|watch|...``."""
