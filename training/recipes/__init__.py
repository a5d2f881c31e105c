"""One-command experiments built on the training package (e.g. ``compare_kd``)."""
