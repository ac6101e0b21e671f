"""Evaluation: metrics (WER/CER ...), reports."""
