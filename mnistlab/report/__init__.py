"""Step 5 of the pipeline: what a person looks at (plots, reports)."""
