"""`inflamrx tune`: search, honest nested estimate, refit (``job.tune`` is the entry point).

Kept empty: worker processes import ``workers`` without the MLflow side of the job.
"""
