"""The scopes a bearer token may carry and what each allows (``events.auth`` checks them).

Standard library only: the command line names them in its help without importing the
verifier (FastAPI, PyJWT and cryptography cost every ``choreo`` command a quarter second)."""

from __future__ import annotations

ORDERS_WRITE = "orders:write"
ORDERS_READ = "orders:read"
OPERATOR_READ = "operator:read"
OPERATOR_WRITE = "operator:write"
SCOPES = {
    ORDERS_WRITE: "place and cancel one's own orders",
    ORDERS_READ: "read one's own orders and customer view",
    OPERATOR_READ: "read everything (all orders, stats, timelines, SKUs, dashboard, metrics)",
    OPERATOR_WRITE: "operator actions (any customer's orders, redrive, deposits, restocks)",
}
CUSTOMER_SCOPES = (ORDERS_READ, ORDERS_WRITE)
OPERATOR_SCOPES = (OPERATOR_READ, OPERATOR_WRITE, ORDERS_READ, ORDERS_WRITE)
