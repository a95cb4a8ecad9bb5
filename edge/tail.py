"""``edge tail``: what a technician on site watches: the gateway's topics, pretty-printed."""

from __future__ import annotations

import contextlib
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import GatewaySettings
from edge.pretty import print_message


def tail(settings: GatewaySettings, seconds: float | None) -> int:
    cfg = settings.mqtt
    root = settings.topic_root
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"edge-tail-{settings.gateway.id}-{time.time_ns() % 10**6}")
    if cfg.username:
        try:
            client.username_pw_set(cfg.username, cfg.password())
        except (ValueError, OSError) as exc:
            print(f"edge tail: mqtt password: {exc}", file=sys.stderr)
            return 1
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/#", qos=1)
    client.on_message = lambda c, u, m: print_message(m.topic, m.payload)
    try:
        client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
    except OSError as exc:
        print(f"edge tail: cannot reach broker {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    print(f"following {root}/# on {cfg.host}:{cfg.port} (Ctrl-C to stop)", file=sys.stderr)
    client.loop_start()
    deadline = None if seconds is None else time.monotonic() + seconds
    with contextlib.suppress(KeyboardInterrupt):
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    client.loop_stop()
    client.disconnect()
    return 0
