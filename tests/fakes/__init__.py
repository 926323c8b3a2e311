"""Test doubles: the outside world notify talks to (HTTP gateways, SMTP) and in-memory stores
for service-layer tests (reporting_facts)."""
