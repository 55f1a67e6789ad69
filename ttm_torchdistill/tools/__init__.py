"""Tools beyond training: the demo, plots, teacher calibration, new recipes."""
