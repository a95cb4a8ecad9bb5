"""``share_repeats``: a validated configuration's repeated small values become one object
each, and the configuration reads, dumps, compares and copies exactly as before."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

from edge.config import load_config
from tests.support import site_config
from vocab.configbase import share_repeats


def site(tmp_path: Path) -> Path:
    """The reservoir's shape: 200 devices of 10 float32 points on the test site's bus."""
    devices = [{"id": f"piezometer-{n:03d}", "bus": "lan", "unit": 3 + n % 240,
                "poll_interval_s": 1.0,
                "points": [{"id": f"p{i}", "quantity": "seepage_pressure", "unit": "kPa",
                            "register": {"table": "holding", "address": 2 * i,
                                         "type": "float32"}} for i in range(10)]}
               for n in range(200)]
    return site_config(tmp_path, 1883, 1502, extra_devices=devices)


def unpickled_bytes(data: bytes) -> int:
    tracemalloc.start()
    try:
        kept = pickle.loads(data)
        size = tracemalloc.get_traced_memory()[0]
        del kept
        return size
    finally:
        tracemalloc.stop()


def test_shared_settings_are_equal_dump_the_same_and_take_less_memory(tmp_path: Path) -> None:
    config = site(tmp_path)
    plain, shared = load_config(config).settings, load_config(config).settings
    share_repeats(shared)
    assert shared == plain
    assert shared.model_dump_json() == plain.model_dump_json()
    assert (shared.model_dump_json(exclude_unset=True)
            == plain.model_dump_json(exclude_unset=True))
    first, second = shared.devices[-2].points[0], shared.devices[-1].points[0]
    assert first.register.type is second.register.type, "one string for the type"
    assert first.model_fields_set is second.model_fields_set, "one set for the fields given"
    before = unpickled_bytes(pickle.dumps(plain))
    after = unpickled_bytes(pickle.dumps(shared))
    assert after < before * 0.75, (before, after)


def test_a_copy_with_changes_does_not_touch_the_shared_fields_set(tmp_path: Path) -> None:
    shared = load_config(site(tmp_path)).settings
    share_repeats(shared)
    point = shared.devices[-2].points[0]
    other = shared.devices[-1].points[0]
    copied = point.model_copy(update={"name": "renamed"})
    assert "name" in copied.model_fields_set
    assert "name" not in other.model_fields_set and "name" not in point.model_fields_set


def test_equal_frozen_models_become_one_and_unequal_ones_stay_apart(tmp_path: Path) -> None:
    # 200 piezometers of one make answer alike: one point model and one register model
    # stand for all of them, as long as every field is equal.
    devices = [{"id": f"pz-{n:03d}", "bus": "lan", "unit": 3 + n, "poll_interval_s": 1.0,
                "points": [{"id": "head", "quantity": "seepage_pressure", "unit": "kPa",
                            "register": {"table": "holding", "address": 0, "type": "float32"},
                            "offset": -0.0 if n == 3 else 0.0,
                            "scale": 2.0 if n == 2 else 1.0,
                            "range": [0.0, 500.0]}]}
               for n in range(6)]
    path = site_config(tmp_path, 1883, 1502, extra_devices=devices)
    plain, shared = load_config(path).settings, load_config(path).settings
    share_repeats(shared)
    assert shared == plain
    assert shared.model_dump_json() == plain.model_dump_json()
    points = {d.id: d.points[0] for d in shared.devices if d.id.startswith("pz-")}
    assert points["pz-000"] is points["pz-001"] is points["pz-004"] is points["pz-005"]
    assert points["pz-002"] is not points["pz-000"], "another scale: another model"
    assert points["pz-003"] is not points["pz-000"], "-0.0 is kept apart from 0.0"
    assert str(points["pz-003"].offset) == "-0.0"
    assert points["pz-002"].register is points["pz-000"].register, "the equal part shared"
    assert len({id(d) for d in shared.devices}) == len(shared.devices), "ids differ: apart"
    unpickled = pickle.loads(pickle.dumps(shared))
    again = {d.id: d.points[0] for d in unpickled.devices if d.id.startswith("pz-")}
    assert again["pz-000"] is again["pz-005"], "pickled shared, unpickled shared"
