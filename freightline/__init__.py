"""Freightline: continuous promotion for GitOps, on Temporal.

The domain package: resource models, configuration loading, expressions,
selection policies, the Freight ID rule, and the CLI. Workflow code lives in
``workflows/`` and activity code in ``activities/``; both import from here.
"""

__version__ = "0.1.0"
