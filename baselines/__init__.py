"""Baseline methods; importing this package registers them."""
