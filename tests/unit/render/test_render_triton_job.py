"""The Triton job's production contract: replica TLS, the TLS health check, the vLLM
health check with explicit model control, the model-ready script check, and what
tritonserver binds.

Asserted on the rendered HCL (parsed by python-hcl2) and the API JSON, with upstream
TLS off, on (server TLS) and mutual, and on the Nomad templates evaluated the way
consul-template would for sample Nomad Variables.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import hcl2
import pytest
from google.protobuf import text_format
from hcl2.utils import SerializationOptions
from tritonclient.grpc import model_config_pb2 as mc

from caravan.nomad import nomad_templates, triton_job
from caravan.nomad.job_hcl import job_hcl
from caravan.nomad.job_json import job_json
from caravan.nomad.jobmodel import Job
from caravan.render import triton
from caravan.spec import ModelSpec, PlatformSpec, load_spec, parse_spec

OPTS = SerializationOptions(with_comments=False, explicit_blocks=True,
                            preserve_heredocs=False, strip_string_quotes=True)
EXAMPLE = load_spec("examples/platform.yaml")
MODEL = {"name": "a", "engine": {"model": "m"}}
ENVOY_FILES = {"ca_file": "/etc/caravan/replicas-ca.pem", "cert_file": "/etc/caravan/envoy.pem",
               "key_file": "/etc/caravan/envoy.key"}
TLS = parse_spec({"models": [MODEL], "security": {"upstream_tls": {"ca_file": ENVOY_FILES["ca_file"]}}})
MTLS = parse_spec({"models": [MODEL], "security": {"upstream_tls": ENVOY_FILES}})
# Only model "a" has TLS (its own upstream_tls); "b" keeps plaintext.
MIXED = parse_spec({"models": [{**MODEL, "upstream_tls": ENVOY_FILES},
                               {"name": "b", "engine": {"model": "m"}}]})
VAR = "nomad/jobs/triton-a/triton/tritonserver"


def _job(spec: PlatformSpec, model: ModelSpec) -> Job:
    return triton_job.triton_job(spec, model)


def _hcl_task_and_check(job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parsed HCL's task and check bodies."""
    doc = hcl2.loads(job_hcl(job), serialization_options=OPTS)
    (body,) = doc["job"][0].values()
    (group,) = body["group"][0].values()
    (task,) = group["task"][0].values()
    return task, group["service"][0]["check"][0]


def _json_task_and_check(job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
    group = job_json(job)["TaskGroups"][0]
    return group["Tasks"][0], group["Services"][0]["Checks"][0]


# --------------------------------------------------------------------------- replica TLS


@pytest.mark.parametrize("spec", [EXAMPLE, MIXED], ids=["example", "mixed"])
def test_no_upstream_tls_means_no_tls_anywhere(spec: PlatformSpec) -> None:
    for model in spec.models:
        if model.upstream_tls is not None:
            continue
        job = _job(spec, model)
        text = job_hcl(job)
        api = json.dumps(job_json(job))
        for needle in ("--grpc-use-ssl", "--grpc-server-cert", "--grpc-root-cert", "nomadVar \\\"nomad"):
            assert needle not in api, needle
        assert "--grpc-use-ssl" not in text and "grpc_use_tls" not in text
        assert "tls_skip_verify" not in text and "secrets/replica" not in text
        assert "GRPCUseTLS" not in api and "TLSSkipVerify" not in api
        task, check = _hcl_task_and_check(job)
        assert "grpc_use_tls" not in check and "tls_skip_verify" not in check
        env = next(t for t in task["template"] if t["destination"] == "secrets/caravan.env")
        assert env["data"] == nomad_templates.secrets_env(job.id).rstrip("\n")


@pytest.mark.parametrize(("spec", "mutual"), [(TLS, False), (MTLS, True)], ids=["tls", "mtls"])
def test_upstream_tls_gives_triton_its_flags_certificates_and_a_tls_check(
        spec: PlatformSpec, mutual: bool) -> None:
    job = _job(spec, spec.models[0])
    for task, check, args, templates in (
        (*_hcl_task_and_check(job), "args", "template"),
        (*_json_task_and_check(job), "args", "Templates"),
    ):
        config = task["config"][0] if isinstance(task.get("config"), list) else task["Config"]
        argv: list[str] = config[args]
        tpls = {(t.get("destination") or t["DestPath"]): t for t in task[templates]}
        want = ["--grpc-use-ssl=true", "--grpc-server-cert=/secrets/replica.crt",
                "--grpc-server-key=/secrets/replica.key"]
        if mutual:
            want += ["--grpc-use-ssl-mutual=true", "--grpc-root-cert=/secrets/replica-client-ca.crt"]
        assert [a for a in argv if a.startswith(("--grpc-use-ssl", "--grpc-server", "--grpc-root"))] == want
        items = {"secrets/replica.crt": "tls_cert", "secrets/replica.key": "tls_key",
                 **({"secrets/replica-client-ca.crt": "tls_client_ca"} if mutual else {})}
        assert {d for d in tpls if d.startswith("secrets/replica")} == set(items)
        for dest, item in items.items():
            tpl = tpls[dest]
            data = (tpl.get("data") or tpl["EmbeddedTmpl"]).rstrip("\n")
            assert data == f'{{{{ with nomadVar "{VAR}" }}}}{{{{ .{item} }}}}{{{{ end }}}}'
            assert (tpl.get("change_mode") or tpl["ChangeMode"]) == "noop"  # no all-replica restart
            assert f"=/{dest}" in " ".join(argv)  # the flag reads the rendered file
        if mutual:  # the port admits Envoy's certificate only: a Consul agent just connects
            assert (check.get("type") or check["Type"]) == "tcp"
            assert check.get("grpc_use_tls", check.get("GRPCUseTLS")) in (None, False)
        else:
            assert check.get("grpc_use_tls", check.get("GRPCUseTLS")) is True
            assert check.get("tls_skip_verify", check.get("TLSSkipVerify")) is True
            assert (check.get("type") or check["Type"]) == "grpc"
    # Envoy's own certificate paths are Envoy's business, never the replica's.
    text = job_hcl(job) + json.dumps(job_json(job))
    assert not any(path in text for path in ENVOY_FILES.values())
    assert f"nomad var put {VAR} tls_cert=@replica.pem tls_key=@replica.key" in job.comment
    assert ("tls_client_ca=@" in job.comment) is mutual


def test_a_model_level_upstream_tls_only_changes_that_models_job() -> None:
    a, b = (_job(MIXED, m) for m in MIXED.models)
    assert "--grpc-use-ssl-mutual=true" in a.groups[0].tasks[0].config.args
    assert a.groups[0].services[0].checks[0].type == "tcp"
    assert not any(x.startswith("--grpc-use-ssl") for x in b.groups[0].tasks[0].config.args)
    assert not b.groups[0].services[0].checks[0].grpc_use_tls


# --------------------------------------------------- the templates, evaluated like consul-template

ENV_CORE = "{{ with nomadVar .Path }}{{ range .Tuples }}{{ .K }}={{ .V | toJSON }}\n{{ end }}{{ end }}"
ENV_TPL = re.compile(r'\{\{ range nomadVarList "(?P<prefix>[^"]+)" \}\}'
                     r'(?P<skips>(?:\{\{ if ne \.Path "[^"]+" \}\})*)' + re.escape(ENV_CORE)
                     + r"(?P<ends>(?:\{\{ end \}\})*)\{\{ end \}\}\n\Z")
ITEM_TPL = re.compile(r'\{\{ with nomadVar "(?P<path>[^"]+)" \}\}\{\{ \.(?P<item>\w+) \}\}\{\{ end \}\}\n\Z')


def render(template: str, variables: dict[str, dict[str, str]]) -> str | None:
    """What Nomad writes for the two template shapes the Triton job uses; None while a
    ``nomadVar`` waits for its variable (consul-template blocks on it)."""
    if m := ENV_TPL.match(template):
        skips = re.findall(r'"([^"]+)"', m.group("skips"))
        assert len(skips) == m.group("ends").count("{{ end }}")
        lines = [f"{k}={json.dumps(v)}\n" for path in sorted(variables)
                 if path.startswith(m.group("prefix")) and path not in skips
                 for k, v in sorted(variables[path].items())]
        return "".join(lines) + "\n"
    m = ITEM_TPL.match(template)
    assert m, f"unexpected template shape: {template!r}"
    if m.group("path") not in variables:
        return None
    return variables[m.group("path")].get(m.group("item"), "<no value>") + "\n"


def test_certificates_reach_files_and_never_the_environment() -> None:
    job = _job(MTLS, MTLS.models[0])
    pem = {"tls_cert": "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----",
           "tls_key": "-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----",
           "tls_client_ca": "-----BEGIN CERTIFICATE-----\nC\n-----END CERTIFICATE-----"}
    variables = {"nomad/jobs/triton-a": {"HF_TOKEN": "hf_x"}, VAR: pem}
    out = {t.destination: render(t.data, variables) for t in job.groups[0].tasks[0].templates
           if t.destination.startswith("secrets/")}
    assert out["secrets/caravan.env"] == 'HF_TOKEN="hf_x"\n\n'
    assert out["secrets/replica.key"] == pem["tls_key"] + "\n"
    assert out["secrets/replica.crt"] == pem["tls_cert"] + "\n"
    assert out["secrets/replica-client-ca.crt"] == pem["tls_client_ca"] + "\n"
    # No variable yet: the certificate templates wait, so tritonserver does not start.
    waiting = {t.destination: render(t.data, {}) for t in job.groups[0].tasks[0].templates
               if t.destination.startswith("secrets/replica")}
    assert set(waiting.values()) == {None}


def test_secrets_env_without_skip_is_unchanged_and_paths_are_checked() -> None:
    assert nomad_templates.secrets_env("j") == (
        '{{ range nomadVarList "nomad/jobs/j" }}{{ with nomadVar .Path }}{{ range .Tuples }}'
        "{{ .K }}={{ .V | toJSON }}\n{{ end }}{{ end }}{{ end }}\n")
    assert render(nomad_templates.secrets_env("j"), {"nomad/jobs/j/x": {"A": "1"}}) == 'A="1"\n\n'
    with pytest.raises(ValueError, match="not a Nomad Variable path"):
        nomad_templates.secrets_env("j", skip=('a" }}{{ x',))
    with pytest.raises(ValueError, match="not an identifier"):
        nomad_templates.nomad_var_item("nomad/jobs/j", "a b")


# ------------------------------------------------------------ dead engine -> NOT_SERVING -> restart


@pytest.mark.parametrize("model", EXAMPLE.models, ids=lambda m: m.name)
def test_config_enables_the_vllm_health_check_and_keeps_custom_metrics(model: ModelSpec) -> None:
    config = text_format.Parse(triton.config_pbtxt(model), mc.ModelConfig())
    assert (config.name, config.backend) == (model.name, "vllm")
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "REPORT_CUSTOM_METRICS": "true", "ENABLE_VLLM_HEALTH_CHECK": "true",
        "REPORT_PREFIX_CACHE_METRICS": "true"}


@pytest.mark.parametrize("spec", [EXAMPLE, MTLS], ids=["example", "mtls"])
def test_tritonserver_runs_with_explicit_model_control_of_its_model(spec: PlatformSpec) -> None:
    for model in spec.models:
        job = _job(spec, model)
        task, _ = _hcl_task_and_check(job)
        argv: list[str] = task["config"][0]["args"]
        assert "--model-control-mode=explicit" in argv
        assert [a for a in argv if a.startswith("--load-model")] == [f"--load-model={model.name}"]
        assert "--strict-readiness=true" in argv  # unloaded model -> server not ready
        assert not any(a.startswith("--model-control-mode=") and a.endswith(("none", "poll"))
                       for a in argv)
        repo = next(a.split("=", 1)[1] for a in argv if a.startswith("--model-repository="))
        config = {t["destination"]: t["data"] for t in task["template"]}
        assert f"{repo.lstrip('/')}/{model.name}/config.pbtxt" in config
        assert "ENABLE_VLLM_HEALTH_CHECK" in config[f"{repo.lstrip('/')}/{model.name}/config.pbtxt"]
        api_args = _json_task_and_check(job)[0]["Config"]["args"]
        assert api_args == argv


@pytest.mark.parametrize("spec", [EXAMPLE, MTLS], ids=["example", "mtls"])
def test_an_unready_replica_is_restarted_after_the_startup_grace(spec: PlatformSpec) -> None:
    for model in spec.models:
        job = _job(spec, model)
        group = job.groups[0]
        grpc_check, ready = group.services[0].checks
        port_check = "tcp" if spec is MTLS else "grpc"
        assert (grpc_check.type, ready.type) == (port_check, "script")
        for check in (grpc_check, ready):
            assert check.check_restart is not None
            # Nomad restarts once a check stays critical for interval * (limit - 1).
            assert check.check_restart.limit >= 2
            assert check.interval_s * (check.check_restart.limit - 1) <= 60
            assert not check.check_restart.ignore_warnings
            # The grace covers pull + download + load: tritonserver opens its ports only after.
            assert check.check_restart.grace_s == spec.nomad.startup_grace_s
            assert group.update is not None and group.update.health_check == "checks"
            assert group.update.healthy_deadline_s > check.check_restart.grace_s
        assert group.update is not None
        assert group.update.progress_deadline_s > group.update.healthy_deadline_s
        assert group.restart is not None and group.restart.mode == "fail"
        assert group.reschedule is not None and group.reschedule.unlimited
        doc = hcl2.loads(job_hcl(job), serialization_options=OPTS)
        (body,) = doc["job"][0].values()
        (hcl_group,) = body["group"][0].values()
        hcl_checks = hcl_group["service"][0]["check"]
        assert [c["name"] for c in hcl_checks] == [grpc_check.name, "triton-model-ready"]
        for c in hcl_checks:
            assert c["check_restart"][0]["grace"] == f"{spec.nomad.startup_grace_s // 60}m"
        api_checks = job_json(job)["TaskGroups"][0]["Services"][0]["Checks"]
        assert [c["CheckRestart"]["Grace"] for c in api_checks] == [spec.nomad.startup_grace_s * 10**9] * 2


@pytest.mark.parametrize("grace", [30, 900, 7200], ids=["min", "default", "max"])
def test_replicas_placed_outside_a_deployment_get_the_startup_grace_too(grace: int) -> None:
    """A drained or rescheduled replica is judged by ``migrate`` (Nomad's default gives it
    5 minutes, less than a model load): its deadline covers the startup grace."""
    spec = parse_spec({"models": [MODEL], "nomad": {"startup_grace_s": grace}})
    group = _job(spec, spec.models[0]).groups[0]
    assert group.migrate is not None and group.update is not None
    assert group.migrate.healthy_deadline_s == group.update.healthy_deadline_s == grace + 300
    assert group.migrate.min_healthy_time_s < group.migrate.healthy_deadline_s
    api = job_json(_job(spec, spec.models[0]))["TaskGroups"][0]["Migrate"]
    assert api == {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 30 * 10**9,
                   "HealthyDeadline": (grace + 300) * 10**9}
    doc = hcl2.loads(job_hcl(_job(spec, spec.models[0])), serialization_options=OPTS)
    (body,) = doc["job"][0].values()
    (hcl_group,) = body["group"][0].values()
    assert hcl_group["migrate"][0]["health_check"] == "checks"


@pytest.mark.parametrize("spec", [EXAMPLE, MTLS], ids=["example", "mtls"])
def test_model_ready_script_check_asks_triton_about_the_model(spec: PlatformSpec) -> None:
    """Triton's gRPC health is server readiness, which is SERVING again once the dead
    engine's model is unloaded: the script check asks about the model itself."""
    for model in spec.models:
        job = _job(spec, model)
        _, ready = job.groups[0].services[0].checks
        assert (ready.task, ready.command, ready.port) == (triton_job.TASK, "python3", None)
        assert ready.args == ("-c", triton_job.model_ready_script(model.name))
        assert f"http://127.0.0.1:8000/v2/models/{model.name}/ready" in ready.args[1]
        assert ready.timeout_s > triton_job.MODEL_READY_TIMEOUT_S  # the script gives up first
        (api_check,) = [c for c in job_json(job)["TaskGroups"][0]["Services"][0]["Checks"]
                        if c["Type"] == "script"]
        assert api_check["TaskName"] == "tritonserver" and api_check["Command"] == "python3"
        assert api_check["Args"] == list(ready.args) and "PortLabel" not in api_check
        assert not ready.grpc_use_tls  # inside the task, loopback HTTP: no TLS involved


class _Triton(BaseHTTPRequestHandler):
    """Triton's HTTP model-ready answers: 200 for the ready model, 400 otherwise."""

    ready = "a"

    def do_GET(self) -> None:
        ok = self.path == f"/v2/models/{self.ready}/ready"
        self.send_response(200 if ok else 400)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def triton_http() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Triton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("model", "code"), [("a", 0), ("gone", 2)], ids=["ready", "unloaded"])
def test_model_ready_script_exit_codes(triton_http: int, model: str, code: int) -> None:
    # Nomad: exit 0 passing, 1 warning, anything else critical (script_check_hook.go).
    result = subprocess.run([sys.executable, "-c", triton_job.model_ready_script(model, triton_http)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == code, result
    if code:
        assert "400" in result.stdout


def test_model_ready_script_is_critical_when_triton_is_not_listening() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # closed once the block ends: connection refused
    result = subprocess.run([sys.executable, "-c", triton_job.model_ready_script("a", port)],
                            capture_output=True, timeout=30)
    assert result.returncode == 2


# --------------------------------------------------------------------------- ports and binds


@pytest.mark.parametrize("spec", [EXAMPLE, MTLS], ids=["example", "mtls"])
def test_grpc_and_metrics_bound_as_the_job_maps_them_http_on_loopback_only(spec: PlatformSpec) -> None:
    for model in spec.models:
        job = _job(spec, model)
        group = job.groups[0]
        assert group.network is not None
        to = {p.label: p.to for p in group.network.ports}
        assert to == {"grpc": triton_job.GRPC_PORT, "metrics": triton_job.METRICS_PORT}
        (task,) = group.tasks
        argv = task.config.args
        assert task.config.ports == ("grpc", "metrics")
        assert f"--grpc-address={triton_job.BIND}" in argv and f"--grpc-port={to['grpc']}" in argv
        assert f"--metrics-address={triton_job.BIND}" in argv
        assert f"--metrics-port={to['metrics']}" in argv and "--allow-metrics=true" in argv
        # HTTP serves only the model-ready script check inside the task: loopback, and
        # neither a port label nor a docker port, so no plaintext inference from outside.
        assert [a for a in argv if a.startswith(("--allow-http", "--http-"))] == [
            "--allow-http=true", "--http-address=127.0.0.1", f"--http-port={triton_job.HTTP_PORT}"]
        assert "http" not in to and "http" not in task.config.ports
        assert {c.port for s in group.services for c in s.checks if c.port is not None} == {"grpc"}
        assert dict(group.services[0].meta)["metrics_port"] == "${NOMAD_HOST_PORT_metrics}"
