"""MLflow plumbing: the tracking store, run tags, and Optuna studies as MLflow runs."""
