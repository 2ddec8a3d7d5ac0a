"""Inventory: stock levels and per-order reservations in the order saga."""
