"""Test doubles of the outside world the notify service talks to: HTTP gateways and SMTP."""
