"""Scoring models on datasets (through the Predictor) and the plots of an evaluation."""
