"""Free-form spec strings never become consul-template actions (issue 17, Deliver 6).

Nomad runs every ``template`` block through consul-template, where ``{{ env "X" }}`` or
``{{ key "k" }}`` in a spec string (``engine.model``, a file path, the JWT issuer)
would run on the client. Every job is rendered twice, from a spec whose free-form
strings are plain and from one whose strings hold ``{{ ... }}``, ``}}`` and ``[[ ]]``:
the actions of every template (lexed as Go's text/template does: ``{{`` to the next
``}}`` outside a quoted string) must be the same in both, and the hostile text must
come out of the template verbatim.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from caravan.nomad import jobs as nomad
from caravan.nomad.jobmodel import Template
from caravan.spec import PlatformSpec, parse_spec

HOSTILE = '{{ env "CONSUL_HTTP_TOKEN" }}{{ key "x" }} }} [[ .y ]] {{'
LITERALS = {'{{ "{{" }}': "{{", '{{ "}}" }}': "}}"}


def _spec(text: str) -> PlatformSpec:
    path = f"/etc/{text}"
    return parse_spec({
        "models": [{"name": "a", "engine": {"model": text, "dtype": text}}],
        "consul": {"datacenter": text, "address": f"{text}:8500"},
        "nomad": {"namespace": "default"},
        "security": {
            "jwt": {"issuer": text, "audiences": [text], "jwks_file": path},
            "xds_tls": {"cert_file": path, "key_file": path, "ca_file": path,
                        "client_ca_file": path, "client_cert_file": path,
                        "client_key_file": path, "client_sans": ["spiffe://x/envoy"]},
            "upstream_tls": {"ca_file": path, "cert_file": path, "key_file": path},
        },
    })


def actions(text: str) -> list[str]:
    """Every ``{{ ... }}`` action of a Go template, in order (quotes respected)."""
    out: list[str] = []
    i = 0
    while (start := text.find("{{", i)) >= 0:
        j, quote = start + 2, ""
        while not (not quote and text.startswith("}}", j)):
            assert j < len(text), f"unterminated action at {text[start:start + 60]!r}"
            c = text[j]
            if quote and c == "\\" and quote == '"':
                j += 1
            elif quote and c == quote:
                quote = ""
            elif not quote and c in "\"`":
                quote = c
            j += 1
        out.append(text[start:j + 2])
        i = j + 2
    return out


def literal_output(text: str) -> str:
    """``text`` with its string-literal actions evaluated (other actions kept)."""
    out, i = [], 0
    for action in actions(text):
        start = text.index(action, i)
        out += [text[i:start], LITERALS.get(action, action)]
        i = start + len(action)
    return "".join([*out, text[i:]])


def _templates(spec: PlatformSpec) -> dict[str, Template]:
    return {f"{job.id}/{t.name}/{tpl.destination}": tpl
            for job in nomad.all_jobs(spec) for g in job.groups for t in g.tasks
            for tpl in t.templates}


def test_lexer_reads_quoted_braces_as_part_of_one_action() -> None:
    assert actions('a {{ "}}" }} b {{ .X }}') == ['{{ "}}" }}', "{{ .X }}"]
    assert literal_output('x{{ "{{" }}y{{ "}}" }}') == "x{{y}}"


def test_spec_strings_add_no_template_action() -> None:
    plain, hostile = _templates(_spec("plain-text")), _templates(_spec(HOSTILE))
    assert plain.keys() == hostile.keys()
    for name, tpl in hostile.items():
        ran = [a for a in actions(tpl.data) if a not in LITERALS]
        assert ran == [a for a in actions(plain[name].data) if a not in LITERALS], name


@pytest.mark.parametrize(("suffix", "read"), [
    ("/local/models/a/1/model.json", lambda text: json.loads(text)["model"]),
    ("/xds/local/platform.yaml", lambda text: text),
])
def test_hostile_text_reaches_the_file_verbatim(suffix: str, read: Any) -> None:
    (tpl,) = [t for name, t in _templates(_spec(HOSTILE)).items() if name.endswith(suffix)]
    assert HOSTILE in str(read(literal_output(tpl.data)))
