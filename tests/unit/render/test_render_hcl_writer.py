"""The HCL writer: values read back exactly (python-hcl2), layout is deterministic."""

from __future__ import annotations

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from caravan.nomad.hcl import Attr, Block, Value, dumps
from caravan.nomad.job_hcl import duration

OPTS = SerializationOptions(with_comments=False, explicit_blocks=False,
                            preserve_heredocs=False, strip_string_quotes=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("plain", "plain"),
     ('quote " and \\ backslash', 'quote " and \\ backslash'),
     ("tab\tinside", "tab\tinside"),
     ("${NOMAD_HOST_PORT_metrics}", "${NOMAD_HOST_PORT_metrics}"),
     ("--node-id=xds-${NOMAD_ALLOC_INDEX}", "--node-id=xds-${NOMAD_ALLOC_INDEX}"),
     ("${attr.unique.network.ip-address}", "${attr.unique.network.ip-address}"),
     ("{{ env \"NOMAD_PORT_xds\" }}", "{{ env \"NOMAD_PORT_xds\" }}"),
     ("no\ntrailing newline", "no\ntrailing newline"),
     (7, 7), (0.9, 0.9), (True, True), (False, False),
     (("a", "b"), ["a", "b"]),
     (tuple(f"--flag-number-{i}" for i in range(8)), [f"--flag-number-{i}" for i in range(8)])],
    ids=["plain", "quote-backslash", "tab", "runtime-port", "runtime-in-text", "runtime-attr",
         "consul-template", "newline-quoted", "int", "float", "true", "false", "list",
         "long-list-wrapped"],
)
def test_values_read_back_exactly(value: Value, expected: object) -> None:
    text = dumps((Attr("v", value),))
    assert hcl2.loads(text, serialization_options=OPTS)["v"] == expected


@pytest.mark.parametrize(
    ("value", "escaped"),
    [("cost: ${price}", "$${price}"), ("%{ if x }", "%%{ if x }")],
    ids=["dollar-brace", "percent-brace"],
)
def test_hcl_template_sequences_are_escaped(value: str, escaped: str) -> None:
    assert escaped in dumps((Attr("v", value),))


def test_heredoc_keeps_content_verbatim() -> None:
    data = 'line "one"\n  indented {{ .Port }}\nEOT\n'
    text = dumps((Attr("data", data),))
    assert "<<EOTX\n" in text, "a line equal to the marker must change the marker"
    parsed = hcl2.loads(text, serialization_options=OPTS)["data"]
    assert parsed + "\n" == data  # python-hcl2 drops the final newline HCL keeps


def test_layout_aligns_attributes_and_separates_blocks() -> None:
    body = (Block("job", ("x",), (
        Attr("type", "service"), Attr("datacenters", ("dc1",)),
        Block("group", ("g",), (Attr("count", 1),)),
        Block("group", ("h",), ()),
    )),)
    assert dumps(body, header="hello") == (
        "# hello\n\n"
        'job "x" {\n'
        '  type        = "service"\n'
        '  datacenters = ["dc1"]\n'
        "\n"
        '  group "g" {\n'
        "    count = 1\n"
        "  }\n"
        "\n"
        '  group "h" {}\n'
        "}\n"
    )


@pytest.mark.parametrize("name", ["has space", "1leading", "dot.ted"],
                         ids=["space", "digit", "dot"])
def test_bad_attribute_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="not an identifier"):
        Attr(name, 1)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (45, "45s"), (90, "90s"),
                                               (300, "5m"), (3600, "1h"), (5400, "90m")],
                         ids=["zero", "45s", "90s", "5m", "1h", "90m"])
def test_durations_are_go_duration_strings(seconds: int, text: str) -> None:
    assert duration(seconds) == text
