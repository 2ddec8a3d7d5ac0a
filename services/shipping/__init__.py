"""Shipping: books a carrier for paid orders, or says why it cannot; cancels on compensation."""
