"""The run report: every step's result summed into one iys.sync_runs row."""
