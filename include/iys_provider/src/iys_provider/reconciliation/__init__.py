"""The daily reconciliation: rules (windows, file readings, hashes), its store, and one day as a service."""
