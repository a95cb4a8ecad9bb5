"""A configuration cannot expand past fixed bounds: alias bombs, deep nesting, huge files.

Each limit gives ``FILE:LINE: ...`` naming it, the way ``edge check`` and ``reload_config``
report any other configuration mistake (issue #14; go-yaml's answer to CVE-2019-11253).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge import yamlsource
from edge.config import ConfigError, load_config
from edge.yamlsource import (
    MAX_DEPTH,
    MAX_EXPANDED_TEXT,
    MAX_FILE_BYTES,
    ConfigSourceError,
    load_yaml_file,
)

REPO = Path(__file__).resolve().parents[2]


def billion_laughs() -> str:
    """Nine lists of nine aliases to the list before: 9^9 = 387,420,489 strings."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def merge_key_bomb() -> str:
    """The same growth through merge keys: each mapping merges nine copies of the last."""
    lines = ["a: &a {x1: lol, x2: lol, x3: lol, x4: lol, x5: lol, x6: lol, x7: lol, x8: lol}"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} {{<<: [" + ",".join([f"*{previous}"] * 9) + "]}")
    return "\n".join(lines) + "\n"


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigSourceError) as raised:
        load_yaml_file(path)
    return [str(p) for p in raised.value.problems]


# Loads in a child process held to 1 GiB of address space and a deadline, so a limit that
# does not hold fails this test instead of taking the machine's memory.
CHILD = """
import json, resource, sys, time, tracemalloc
from edge.config import ConfigError, load_config
tracemalloc.start()
start = time.perf_counter()
try:
    load_config(sys.argv[1])
    message = None
except ConfigError as exc:
    message = str(exc)
print(json.dumps({"seconds": time.perf_counter() - start, "message": message,
                  "traced_peak": tracemalloc.get_traced_memory()[1],
                  "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def load_in_a_bounded_child(path: Path) -> dict[str, object]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], cwd=REPO, capture_output=True, text=True,
        timeout=20, preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize(("text", "line"), [(billion_laughs(), 6), (merge_key_bomb(), 6)])
def test_an_alias_bomb_is_refused_fast_with_its_line(tmp_path: Path, text: str,
                                                     line: int) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert len(text.encode()) < 700  # the issue's file was 500 bytes
    report = load_in_a_bounded_child(path)
    assert report["message"] == (
        f"bomb.yaml:{line}: expands to more than 400,000 YAML nodes once aliases are "
        "expanded (limit: nodes 400,000)"
    )
    assert isinstance(report["seconds"], float) and report["seconds"] < 5.0
    assert isinstance(report["traced_peak"], int) and report["traced_peak"] < 20 * 2**20
    assert isinstance(report["max_rss_kib"], int) and report["max_rss_kib"] < 200 * 1024


def test_edge_check_reports_the_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "edge", "check", "-c", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=20,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    assert result.stderr.startswith("bomb.yaml:6: expands to more than 400,000 YAML nodes")


def test_the_node_limit_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The mapping, its 3 keys, the list of 10 (11 nodes) twice through the alias, and "x".
    path = tmp_path / "site.yaml"
    path.write_text("a: &a [1,2,3,4,5,6,7,8,9,10]\nb: *a\nc: x\n")
    monkeypatch.setattr(yamlsource, "MAX_EXPANDED_NODES", 27)
    assert load_yaml_file(path).data["b"] == list(range(1, 11))
    monkeypatch.setattr(yamlsource, "MAX_EXPANDED_NODES", 26)
    assert problems(path) == [
        "site.yaml:1: expands to more than 26 YAML nodes once aliases are expanded "
        "(limit: nodes 26)"
    ]


def nested(levels: int, key: str = "site") -> str:
    return f"{key}: " + "[" * (levels - 1) + "1" + "]" * (levels - 1) + "\n"


def test_ten_thousand_levels_give_the_line_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("# a comment line first\n" + nested(10_000))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"deep.yaml:2: nested more than {MAX_DEPTH} levels deep (limit: depth {MAX_DEPTH})"
    )


def test_deep_block_mappings_too(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("".join(f"{' ' * i}k{i}:\n" for i in range(150)) + " " * 150 + "k: 1\n")
    assert problems(path) == [
        f"deep.yaml:{MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep "
        f"(limit: depth {MAX_DEPTH})"
    ]


def test_the_depth_limit_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(nested(MAX_DEPTH))  # the top-level mapping is one of the levels
    assert load_yaml_file(path).data["site"]
    path.write_text(nested(MAX_DEPTH + 1))
    assert problems(path)[0].startswith("deep.yaml:1: nested more than 100 levels")


def test_depth_reached_through_aliases(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    half = "[" * 60 + "1" + "]" * 60
    path.write_text(f"a: &a {half}\nb: " + "[" * 60 + "*a" + "]" * 60 + "\n")
    assert problems(path) == [
        f"deep.yaml:2: nests more than {MAX_DEPTH} levels deep once aliases are expanded "
        f"(limit: depth {MAX_DEPTH})"
    ]


def test_an_alias_inside_its_own_anchor(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("site:\n  levels: &a [1, *a]\n")
    assert problems(path) == [
        "loop.yaml:2: alias *a refers to a node that contains it, which expands without end"
    ]


def test_a_long_string_repeated_by_aliases(tmp_path: Path) -> None:
    path = tmp_path / "text.yaml"
    copies = MAX_EXPANDED_TEXT // 200_000 + 1
    path.write_text(f"a: &a {'x' * 200_000}\nb: [" + ", ".join(["*a"] * copies) + "]\n")
    assert problems(path) == [
        f"text.yaml:2: expands to more than {MAX_EXPANDED_TEXT:,} characters of text once "
        f"aliases are expanded (limit: text {MAX_EXPANDED_TEXT:,})"
    ]


def test_a_file_past_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# padding\n" * (MAX_FILE_BYTES // 10) + b"site: {}\n")
    assert problems(path) == [
        f"huge.yaml:1: file is larger than {MAX_FILE_BYTES:,} bytes "
        f"(limit: file size {MAX_FILE_BYTES:,} bytes)"
    ]


def test_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"site:\n  name: Yangjiayuan\n  note: \xe9t\xe9\n")
    assert problems(path) == ["latin.yaml:3: not UTF-8 text: invalid continuation byte"]


def test_the_example_site_is_far_below_every_limit() -> None:
    loaded = load_config(REPO / "config" / "example-site.yaml")
    assert loaded.settings.devices
