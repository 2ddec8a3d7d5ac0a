"""What the two third-party stand-ins (``services.provider``, ``services.carrier``) share: an
HTTP process with its own database, idempotency keys stored with each effect, run-time fault
injection, ``/health`` ``/ready`` ``/metrics``. Small on purpose: they play someone else's
system over real HTTP, so the saga's calls can time out, fail and be retried for real."""
