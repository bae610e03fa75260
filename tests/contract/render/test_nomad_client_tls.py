"""One Nomad adapter (caravan.nomad.client) for ``caravan deploy`` and the autoscaler,
against the Nomad fake served over HTTPS with a client certificate required (Nomad's
``tls { verify_https_client = true }``): the CA is verified, the client certificate is
presented, and each missing piece fails with a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fakes.nomad import FakeNomad
from tests.integration.security.sec_pki import Pki, make_pki
from typer.testing import CliRunner

from caravan.autoscaler.nomad import NomadScaleTarget
from caravan.autoscaler.ports import ScaleError
from caravan.cli import app
from caravan.nomad.client import nomad_client, resolve_nomad_settings
from caravan.nomad.deploy import NomadApiError, PythonNomadJobs
from caravan.spec import NomadSpec, load_spec

SPEC = "examples/platform.yaml"
LLAMA = "triton-llama-3-8b"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def fake(pki: Pki) -> Iterator[FakeNomad]:
    with FakeNomad(tls=(str(pki.server_cert), str(pki.server_key), str(pki.ca))) as f:
        assert f.address.startswith("https://127.0.0.1:")
        yield f


def _env(fake: FakeNomad, pki: Pki, **over: str) -> dict[str, str]:
    env = {"NOMAD_ADDR": fake.address, "NOMAD_TOKEN": "", "NOMAD_CACERT": str(pki.ca),
           "NOMAD_CLIENT_CERT": str(pki.client_cert), "NOMAD_CLIENT_KEY": str(pki.client_key)}
    env.update(over)
    return env


def _read(path: str) -> str:
    return Path(path).read_text()


def test_deploy_verifies_the_server_and_presents_the_client_certificate(
        fake: FakeNomad, pki: Pki) -> None:
    result = CliRunner().invoke(app, ["deploy", SPEC, "--yes"], env=_env(fake, pki))
    assert result.exit_code == 0, result.output
    assert fake.job(LLAMA) is not None


def test_the_autoscaler_uses_the_same_client_from_the_spec_files(
        fake: FakeNomad, pki: Pki) -> None:
    """TLS files from the spec alone (no environment): the autoscaler reaches mTLS Nomad."""
    assert CliRunner().invoke(app, ["deploy", SPEC, "--yes"], env=_env(fake, pki)).exit_code == 0
    spec = NomadSpec(address=fake.address, ca_file=str(pki.ca), client_cert=str(pki.client_cert),
                     client_key=str(pki.client_key))
    client = nomad_client(resolve_nomad_settings(spec, {}, _read), timeout_s=5)
    target = NomadScaleTarget(client, {"llama-3-8b": (LLAMA, "triton")}, clock=fake.clock)
    assert target.status("llama-3-8b").desired == 2
    fake.advance(31)  # the first deployment ends
    target.scale("llama-3-8b", 3, "tls", {})
    assert target.status("llama-3-8b").desired == 3


def test_the_autoscale_command_builds_its_target_through_the_adapter(
        fake: FakeNomad, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    from caravan.autoscaler.service import scale_target

    assert CliRunner().invoke(app, ["deploy", SPEC, "--yes"], env=_env(fake, pki)).exit_code == 0
    for key, value in _env(fake, pki).items():
        monkeypatch.setenv(key, value)
    target = scale_target(load_spec(SPEC), "nomad", None, None, metrics=None)  # type: ignore[arg-type]
    assert target.status("llama-3-8b").desired == 2


@pytest.mark.parametrize(
    ("over", "needle"),
    [({"NOMAD_CLIENT_CERT": "", "NOMAD_CLIENT_KEY": ""}, "cannot reach Nomad"),
     ({"NOMAD_CACERT": ""}, "CERTIFICATE_VERIFY_FAILED"),
     ({"NOMAD_CLIENT_CERT": "ROGUE", "NOMAD_CLIENT_KEY": "ROGUE_KEY"}, "cannot reach Nomad")],
    ids=["no-client-certificate", "server-not-verified-without-the-ca", "rogue-client-cert"],
)
def test_each_missing_piece_fails_clearly(fake: FakeNomad, pki: Pki, over: dict[str, str],
                                          needle: str) -> None:
    env = _env(fake, pki, **over)
    env = {k: {"ROGUE": str(pki.rogue_cert), "ROGUE_KEY": str(pki.rogue_key)}.get(v, v)
           for k, v in env.items()}
    settings = resolve_nomad_settings(NomadSpec(), env, _read)
    with pytest.raises(NomadApiError) as info:
        PythonNomadJobs(settings, timeout_s=5).current(LLAMA)
    assert needle in str(info.value)
    client = nomad_client(settings, timeout_s=5)
    with pytest.raises(ScaleError):
        NomadScaleTarget(client, {"m": (LLAMA, "triton")}).status("m")
    assert fake.requests == [], "nothing got through"


def test_half_a_client_certificate_is_a_named_setting_error(pki: Pki) -> None:
    with pytest.raises(ValueError, match=r"set NOMAD_CLIENT_KEY or nomad\.client_key"):
        resolve_nomad_settings(NomadSpec(client_cert=str(pki.client_cert)), {}, _read)
    with pytest.raises(ValueError, match=r"set NOMAD_CLIENT_CERT or nomad\.client_cert"):
        resolve_nomad_settings(NomadSpec(), {"NOMAD_CLIENT_KEY": str(pki.client_key)}, _read)
