"""The shared vocabulary at the bottom of reservoir-edge: what every layer speaks.

Readings and alarm transitions, ids and point references, the strict configuration base
and durations. Nothing here imports anything of ours, so drivers, rules and the daemon
core can all import it without pulling each other in (see docs/architecture.md).
"""
