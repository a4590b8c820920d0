"""Test support code shared by suites (fixtures registered from tests/conftest.py)."""
