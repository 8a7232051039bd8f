"""The initial sync: the scan ledger (plans and batches), address claims, the multi-status checks and the recipients they prepare."""
