"""Torture suites (issue 7): run by `make torture` (full) and `make torture-quick` (CI). See RELIABILITY.md."""
