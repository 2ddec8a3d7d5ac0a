"""Payments: customer accounts, and one capture (or decline) per order in the order saga."""
