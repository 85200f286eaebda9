"""Provisioning helpers: one module per AWS resource family."""
