"""Reviewer audit: checks per clause id, PII scan, attacks, empirical DP audit, report."""
