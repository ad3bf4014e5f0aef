"""Files: datasets in, model files and checkpoints, run folders, and their reports and plots."""
