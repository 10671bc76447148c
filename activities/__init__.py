"""Temporal activities, grouped by what they talk to.

Every activity here is idempotent and safe to retry on another worker with
an empty disk. Credentials are resolved here, from the worker's own
configuration, and never returned to a workflow.
"""
