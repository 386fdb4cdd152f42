"""Readers and writers of DIALS and XDS files."""
