"""Temporal workflows only: deterministic code that decides; activities act.

Workflows import the domain package (``freightline``) through the sandbox's
pass-through, and name activities by string, never importing ``activities``.
"""
