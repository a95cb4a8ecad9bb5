"""Test equipment: simulated field devices, wiring, modem and centres.

Installed with the gateway so that ``edge simulate`` and ``edge demo`` work on any
machine, but never imported by the daemon (tests/test_layers.py checks): what runs at a
reservoir carries no code that only a test bench needs.
"""
