"""Audit: the change-record hash chain — building records, appending them, verifying them."""
