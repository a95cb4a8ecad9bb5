"""Fault injection suite (issue #7): uplink, process, device and input faults."""
