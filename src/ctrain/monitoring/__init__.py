"""Monitoring: batch inference with the champion, drift and performance checks, the retrain trigger."""
