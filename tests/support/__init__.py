"""Helpers shared by the test suite, importable as ``support`` (tests/ is on sys.path)."""
