"""The orders service: accepts orders and decides each order's one terminal state."""
