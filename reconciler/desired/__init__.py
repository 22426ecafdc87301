"""Desired state: manifest models, YAML parsing, Git reading, genome hashing, reference checks.

Knows no database and no policy engine. ``loading.load`` is the entry point.
"""
