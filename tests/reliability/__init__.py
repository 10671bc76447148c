"""Reliability suite (issue 9): crashes, restarts, races, faults, bad input, secrets, replay.

Run it alone with ``pytest -m reliability``; it also runs in the normal suite.
"""
