"""Jepsen-style failover verification of mq9cluster: real clusters in network namespaces, faults, a checker.

See docs/reliability.md. ``python -m chaos --help`` lists the commands.
"""
