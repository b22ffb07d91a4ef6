"""Compatibility shims for third-party packages (kept in one place so version bumps stay local)."""
