"""Accounts, roles, API tokens, login sessions and the audit trail, shared by every service."""

from giliran.auth.accounts import ALL_SITES, AuthStore, Principal, Role
from giliran.auth.audit import AuditLog
from giliran.auth.web import Auth, Forbidden, Unauthenticated, requires, wrong_site

__all__ = [
    "ALL_SITES",
    "AuditLog",
    "Auth",
    "AuthStore",
    "Forbidden",
    "Principal",
    "Role",
    "Unauthenticated",
    "requires",
    "wrong_site",
]
