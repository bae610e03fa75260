"""The ``caravan`` command line: a table of contents, loaded lazily.

Each area registers its own commands from a small ``commands`` module
(``register(app)``). ``COMMANDS`` lists them with their one-line help, so
``caravan --help`` lists every command without importing any of those modules
(pydantic, grpc, matplotlib...); a module is imported when one of its commands runs
or shows its own ``--help``. ``tests/unit/test_cli.py`` checks each line below against
the command's own docstring.

  validate                      caravan.spec.commands      spec checking
  replica                       caravan.triton.commands    real tritonserver, simulated vLLM engine
  xds                           caravan.xds.commands       the xDS control plane
  up, demo                      caravan.local.commands     whole stack on 127.0.0.1
  render, deploy                caravan.render.commands    Nomad HCL, Envoy, Triton, Docker
  autoscale                     caravan.autoscaler.commands
  panels                        caravan.observability.commands   a model's key panels as a PNG
  bench                         caravan.bench.commands     load benchmark
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer._click import Command, Context, HelpFormatter  # typer's vendored click

Register = Callable[[typer.Typer], None]


def _spec() -> Register:
    from caravan.spec import commands

    return commands.register


def _triton() -> Register:
    from caravan.triton import commands

    return commands.register


def _xds() -> Register:
    from caravan.xds import commands

    return commands.register


def _local() -> Register:
    from caravan.local import commands

    return commands.register


def _render() -> Register:
    from caravan.render import commands

    return commands.register


def _autoscaler() -> Register:
    from caravan.autoscaler import commands

    return commands.register


def _observability() -> Register:
    from caravan.observability import commands

    return commands.register


def _bench() -> Register:
    from caravan.bench import commands

    return commands.register


@dataclass(frozen=True)
class Entry:
    """A command: its one-line help (the first line of its docstring) and the
    ``register`` of the module that defines it (imported on first use)."""

    help: str
    register: Callable[[], Register]


COMMANDS: dict[str, Entry] = {
    "validate": Entry("Validate a platform spec; print every error with its path.", _spec),
    "replica": Entry("Run a local replica: real tritonserver with the simulated vLLM engine.", _triton),
    "xds": Entry("Run the xDS control plane: discovery -> snapshots -> ADS (SotW and delta) for Envoy.",
                 _xds),
    "up": Entry("Start the whole serving stack on 127.0.0.1 and keep it running until Ctrl-C / SIGTERM.",
                _local),
    "demo": Entry("`caravan up` + a concurrency sweep through Envoy, a latency table, then shutdown.",
                  _local),
    "render": Entry("Render Nomad jobs, Envoy bootstrap, Triton model repository, Dockerfiles, "
                    "monitoring.", _render),
    "deploy": Entry("Plan every Nomad job (showing the diff), then register them after confirmation.",
                    _render),
    "autoscale": Entry("Scale each model's replicas from Prometheus signals, per its autoscaling policy.",
                       _autoscaler),
    "panels": Entry("Draw a model's key panels (requests, errors, TTFT, latency, tokens, in-flight, "
                    "replicas).", _observability),
    "bench": Entry("Load-benchmark a gRPC (Triton/KServe v2) inference endpoint: Envoy or a replica.",
                   _bench),
}


def load_command(name: str) -> Command:
    """The real click command ``name`` (imports its module). KeyError: no such command."""
    sub = typer.Typer()
    COMMANDS[name].register()(sub)
    return typer.main.get_group(sub).commands[name]


class LazyGroup(TyperGroup):
    """Lists ``COMMANDS`` from the table; loads a command only to run it or show its help."""

    listing = False  # True while this group's own help is being formatted

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # stand-ins (name and help only): what the help lists and typos are matched against
        self.commands.update({name: TyperCommand(name, help=e.help) for name, e in COMMANDS.items()})

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        if self.listing:
            return self.commands[cmd_name]
        return load_command(cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(
    name="caravan",
    cls=LazyGroup,
    help="Nomad-native LLM serving: Triton+vLLM replicas behind Envoy, driven by an xDS control plane.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Nomad-native LLM serving: Triton+vLLM replicas behind Envoy, driven by an xDS control plane."""
