"""Monitoring: batch inference, delayed labels, drift and performance checks, the retrain trigger."""
