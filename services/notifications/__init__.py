"""Notifications: tells each customer, once, how their order ended."""
