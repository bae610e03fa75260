"""``caravan render`` and ``caravan deploy``.

  caravan render examples/platform.yaml --out .             # jobs/, envoy/, triton_models/ ...
  caravan render examples/platform.yaml --out DIR --format json
  caravan deploy examples/platform.yaml --dry-run           # plan only, show the diffs
  caravan deploy examples/platform.yaml --yes               # plan, then register

Heavy imports stay inside the commands so ``caravan --help`` stays fast.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from caravan.spec import PlatformSpec


class Format(enum.StrEnum):
    hcl = "hcl"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add ``render`` and ``deploy`` to the ``caravan`` app."""
    app.command("render")(render)
    app.command("deploy")(deploy)


def _load(spec: Path) -> PlatformSpec:
    from caravan.spec import SpecError, load_spec

    try:
        return load_spec(spec)
    except SpecError as exc:
        typer.echo(f"{exc.source}: {len(exc.errors)} error(s)", err=True)
        for err in exc.errors:
            typer.echo(f"  {err}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"cannot read {spec}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None


def render_files(ps: PlatformSpec, fmt: Format) -> dict[str, str]:
    """Every rendered file; with ``json`` the Nomad jobs are API JSON instead of HCL."""
    from caravan.nomad import jobs as nomad
    from caravan.render.catalog import render_all

    files = render_all(ps)
    if fmt is Format.json:
        for job in nomad.jobs(ps):
            files.pop(nomad.hcl_path(job))
        files.update(nomad.render_json(ps))
    return dict(sorted(files.items()))


SpecArg = Annotated[Path, typer.Argument(help="platform spec YAML")]


def render(
    spec: SpecArg,
    out: Annotated[Path, typer.Option("--out", help="output directory (created if missing)")],
    fmt: Annotated[Format, typer.Option("--format", help="jobs as hcl or API json")] = Format.hcl,
) -> None:
    """Render Nomad jobs, Envoy bootstrap, Triton model repository, Dockerfiles, monitoring."""
    files = render_files(_load(spec), fmt)
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    typer.echo(f"wrote {len(files)} file(s) under {out}")


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
    import os

    from caravan.logs import setup_logging
    from caravan.nomad import jobs as nomad
    from caravan.nomad.deploy import PythonNomadJobs, resolve_settings
    from caravan.nomad.deploy import deploy as run_deploy
    from caravan.nomad.job_json import job_request

    setup_logging("deploy")
    ps = _load(spec)
    try:
        settings = resolve_settings(ps.nomad, os.environ, lambda p: Path(p).read_text(),
                                    address, None if token_file is None else str(token_file))
    except ValueError as exc:
        typer.echo(f"deploy: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"Nomad {settings.address} (namespace {settings.namespace}"
               f"{', ACL token set' if settings.token else ''})")
    api = PythonNomadJobs(settings, timeout_s)
    requests = [job_request(j) for j in nomad.all_jobs(ps)]
    result = run_deploy(requests, api, dry_run=dry_run, echo=typer.echo,
                        confirm=(lambda _q: True) if yes else _ask)
    if not result.ok:
        raise typer.Exit(1)


def _ask(question: str) -> bool:
    return bool(typer.confirm(question, default=False))
