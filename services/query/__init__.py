"""The read side of the order saga: CQRS projections of every service's events and a query
API over them (orders, timelines, customers, SKUs), rebuilt by replay without downtime."""
