"""Output channels of the outbox: MQTT, SL 651 centres, notifications."""
