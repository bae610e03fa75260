"""``caravan render`` and ``caravan deploy``.

  caravan render examples/platform.yaml --out .             # jobs/, envoy/, triton_models/ ...
  caravan render examples/platform.yaml --out DIR --format json
  caravan deploy examples/platform.yaml --dry-run           # plan only, show the diffs
  caravan deploy examples/platform.yaml --yes               # plan, then register

Thin: options -> ``RenderConfig`` / ``DeployConfig`` -> one service (``write_rendered``,
``run_deploy``) -> exit code (``caravan.exits``: 1 for an invalid spec or a failed
deploy, 2 for an unreadable file or a bad Nomad setting). Imported only when one of
these commands runs (``caravan.cli`` registers them lazily).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from caravan.exits import errors_exit, read_spec
from caravan.logs import setup_logging
from caravan.nomad import jobs as nomad
from caravan.nomad.deploy import DeployResult, PythonNomadJobs, resolve_nomad_settings
from caravan.nomad.deploy import deploy as nomad_deploy
from caravan.nomad.job_json import job_request
from caravan.render.catalog import render_all
from caravan.render.output import WriteReport, write_tree
from caravan.spec import PlatformSpec


class Format(enum.StrEnum):
    hcl = "hcl"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add ``render`` and ``deploy`` to the ``caravan`` app."""
    app.command("render")(render)
    app.command("deploy")(deploy)


@dataclass(frozen=True)
class RenderConfig:
    """Render ``spec`` into ``out``; Nomad jobs as ``fmt``."""

    spec: PlatformSpec
    out: Path
    fmt: Format = Format.hcl


@dataclass(frozen=True)
class DeployConfig:
    """Deploy ``spec`` to Nomad (``address``/``token_file``: flag > env > spec)."""

    spec: PlatformSpec
    dry_run: bool = False
    yes: bool = False
    address: str | None = None
    token_file: Path | None = None
    timeout_s: float = 30.0


def render_files(ps: PlatformSpec, fmt: Format) -> dict[str, str]:
    """Every rendered file; with ``json`` the Nomad jobs are API JSON instead of HCL."""
    files = render_all(ps)
    if fmt is Format.json:
        for job in nomad.serving_jobs(ps):
            files.pop(nomad.hcl_path(job))
        files.update(nomad.render_json(ps))
    return dict(sorted(files.items()))


def write_rendered(config: RenderConfig) -> WriteReport:
    """Write every rendered file under ``config.out`` (``caravan.render.output``: atomic,
    confined to ``out``, files of removed models removed). Raises OutputError."""
    return write_tree(config.out, render_files(config.spec, config.fmt))


def run_deploy(config: DeployConfig) -> DeployResult:
    """Plan every job, then register after confirmation (``yes``: without asking).
    Raises ValueError naming a bad Nomad setting."""
    settings = resolve_nomad_settings(config.spec.nomad, os.environ, lambda p: Path(p).read_text(),
                                config.address,
                                None if config.token_file is None else str(config.token_file))
    typer.echo(f"Nomad {settings.address} (namespace {settings.namespace}"
               f"{', ACL token set' if settings.token else ''})")
    api = PythonNomadJobs(settings, config.timeout_s)
    requests = [job_request(j) for j in nomad.all_jobs(config.spec)]
    return nomad_deploy(requests, api, dry_run=config.dry_run, echo=typer.echo,
                        confirm=(lambda _q: True) if config.yes else _ask)


SpecArg = Annotated[Path, typer.Argument(help="platform spec YAML")]


def render(
    spec: SpecArg,
    out: Annotated[Path, typer.Option("--out", help="output directory (created if missing)")],
    fmt: Annotated[Format, typer.Option("--format", help="jobs as hcl or API json")] = Format.hcl,
) -> None:
    """Render Nomad jobs, Envoy bootstrap, Triton model repository, Dockerfiles, monitoring."""
    with errors_exit(""):
        report = write_rendered(RenderConfig(read_spec(spec), out, fmt))
    for line in report.lines(out):
        typer.echo(line)


def deploy(
    spec: SpecArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="plan and show diffs only")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="register without asking")] = False,
    address: Annotated[
        str | None, typer.Option("--address", help="Nomad URL (else NOMAD_ADDR, spec)")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="ACL token file (else NOMAD_TOKEN, spec)")
    ] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="per-request timeout, s")] = 30.0,
) -> None:
    """Plan every Nomad job (showing the diff), then register them after confirmation."""
    setup_logging("deploy")
    with errors_exit(""):
        ps = read_spec(spec)
    with errors_exit("deploy"):
        result = run_deploy(DeployConfig(ps, dry_run, yes, address, token_file, timeout_s))
    if not result.ok:
        raise typer.Exit(1)


def _ask(question: str) -> bool:
    return bool(typer.confirm(question, default=False))
