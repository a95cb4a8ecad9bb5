"""libyaml scans and parses site files (speed); PyYAML's own parser is the reference.

Both must compose the same nodes: the same document, every key path on the same line,
and the limits on nodes, depth and text refused the same way. Files with a syntax error
are read again by PyYAML's parser, so their messages are PyYAML's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import yamlsource
from edge.yamlsource import LocatedDocument, load_yaml_file

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(yamlsource._CParser is None,
                                reason="PyYAML is built without libyaml here")


def located(path: Path, fast: bool) -> LocatedDocument:
    with mock.patch.object(yamlsource, "_CParser", yamlsource._CParser if fast else None):
        return load_yaml_file(path)


@pytest.mark.parametrize("name", ["example-site.yaml", "demo.yaml"])
def test_the_shipped_configs_compose_alike_with_both_parsers(name: str) -> None:
    path = REPO / "config" / name
    fast, pure = (located(path, f) for f in (True, False))
    assert fast.data == pure.data
    assert fast.lines == pure.lines


scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, width=32),
                    st.booleans(), st.none(),
                    # Line breaks such as NEL do not survive PyYAML's own dump and load.
                    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                            max_size=12))
keys = st.text("abcdefghij_", min_size=1, max_size=8)
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=25)


@settings(max_examples=60, deadline=None)
@given(document=st.dictionaries(keys, documents, min_size=1, max_size=5),
       flow=st.booleans())
def test_any_document_composes_alike_with_both_parsers(
        document: dict[str, Any], flow: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("doc") / "site.yaml"
    path.write_text(yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True))
    fast, pure = (located(path, f) for f in (True, False))
    assert fast.data == pure.data == document
    assert fast.lines == pure.lines


def test_a_syntax_error_keeps_pyyaml_s_message(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site:\n  id: a\ndevices:\n  - unit: [1\n    bus: lan\n")
    with pytest.raises(yamlsource.ConfigSourceError) as raised:
        load_yaml_file(path)
    [problem] = raised.value.problems
    # libyaml would say "did not find expected ',' or ']'", without what it found.
    assert str(problem) == ("site.yaml:5: YAML syntax error: while parsing a flow sequence "
                            "expected ',' or ']', but got ':'")
