"""Experiments: one file per experiment, found by module name (``exp_<name>``)."""
