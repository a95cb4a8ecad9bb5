"""The configuration's JSON Schema and reference cannot drift from the models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.cli import main
from edge.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "config" / "schema.json"
DOC = REPO / "docs" / "configuration.md"
REGENERATE = "run `edge schema --output config/schema.json`"
# The sections every configuration has: a YAML block holding them is a whole site file.
REQUIRED_SECTIONS = {"site", "gateway", "mqtt", "store"}


def printed_schema(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["schema"]) == 0
    return capsys.readouterr().out


def property_names(node: Any) -> set[str]:
    """Every key of every ``properties`` mapping, anywhere in the schema ($defs included)."""
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names.update(value)
            names |= property_names(value)
    elif isinstance(node, list):
        for item in node:
            names |= property_names(item)
    return names


def yaml_blocks() -> list[tuple[int, str]]:
    """The fenced ```yaml blocks of the reference, with the line each starts on."""
    text = DOC.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1))
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    ]


def test_committed_schema_is_what_edge_schema_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert SCHEMA.is_file(), f"config/schema.json is missing: {REGENERATE}"
    committed = SCHEMA.read_text(encoding="utf-8")
    assert committed == printed_schema(capsys), (
        f"config/schema.json differs from the configuration models: {REGENERATE}"
    )


def test_schema_output_option_writes_the_same_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "schema.json"
    assert main(["schema", "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text == printed_schema(capsys)
    assert text.endswith("}\n")
    schema = json.loads(text)
    assert schema["title"] == "GatewaySettings"
    assert set(schema["required"]) == REQUIRED_SECTIONS


def test_every_configuration_key_is_documented() -> None:
    names = property_names(json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert {"site", "poll_interval_s", "zero_modulus_f", "reseed_after"} <= names
    doc = DOC.read_text(encoding="utf-8")
    missing = sorted(name for name in names if f"`{name}`" not in doc)
    assert not missing, (
        "configuration keys not documented (as `name`) in "
        f"docs/configuration.md: {', '.join(missing)}"
    )


def test_yaml_examples_in_the_reference_are_valid(tmp_path: Path) -> None:
    blocks = yaml_blocks()
    assert blocks, "no ```yaml blocks found in docs/configuration.md"
    complete = 0
    for line, block in blocks:
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError as exc:
            pytest.fail(f"docs/configuration.md:{line}: YAML block does not parse: {exc}")
        if isinstance(data, dict) and set(data) >= REQUIRED_SECTIONS:
            complete += 1
            site = tmp_path / f"example-{line}.yaml"
            site.write_text(block, encoding="utf-8")
            try:
                load_config(site)
            except ConfigError as exc:
                pytest.fail(
                    f"docs/configuration.md:{line}: the site file example does not load:\n{exc}"
                )
    assert complete >= 1, "docs/configuration.md has no complete site file example"


def test_shipped_configs_validate_against_the_published_schema() -> None:
    import jsonschema

    root = Path(__file__).resolve().parents[2] / "config"
    schema = json.loads((root / "schema.json").read_text())
    for path in sorted(root.glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
