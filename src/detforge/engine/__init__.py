"""Training, evaluation and inference engines."""
