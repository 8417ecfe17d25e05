"""Test plug-ins, one of each kind: each is this one file plus one registry line (tests/test_plugins.py)."""
