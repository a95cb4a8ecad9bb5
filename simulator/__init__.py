"""Test equipment: simulated field devices, modem and centres; never imported by the daemon."""
