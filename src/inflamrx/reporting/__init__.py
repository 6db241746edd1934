"""Reports for people: evaluation and SHAP figures, and the self-contained HTML report."""
