"""Jobs: train, tune and explain, which read data, fit, log and report (the I/O lives here)."""
