"""The Kargo model and its pure rules: no I/O beyond reading a config file, no Temporal.

Resources and config loading, expressions, semver and selection policies,
Freight IDs and URL normal forms, promotion windows, analysis semantics,
credential matching. Imports only the foundation (``freightline.errors``,
``freightline.logging``, ``freightline.settings``) and itself.
"""
