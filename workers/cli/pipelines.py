"""``docpipe pipelines``: the built-in pipelines and the user's."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines import get_pipeline, list_pipelines
from workers.cli.app import HELP_MARKUP, JsonOpt, app, console, err, settings
from workers.ops import tables

pipelines_app = typer.Typer(help="The pipelines: built in, and from DOCPIPE_PIPELINES.",
                            rich_markup_mode=HELP_MARKUP)
app.add_typer(pipelines_app, name="pipelines")


@pipelines_app.callback(invoke_without_command=True)
def pipelines_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the pipelines with their models, versions and where they are defined; warn of
    a model docpipe does not know."""
    if ctx.invoked_subcommand is not None:
        return
    known = list_pipelines(settings().pipelines)
    rows = [{"name": p.name, "version": p.version, "model": p.model,
             "max_output_tokens": p.max_output_tokens, "description": p.description,
             "source": p.source, "warning": p.model_warning} for p in known]
    if as_json:
        console.print_json(data=rows)
        return
    console.print(tables.pipelines(rows))
    for pipeline in known:
        if pipeline.model_warning:
            err.print(f"[yellow]warning:[/yellow] pipeline {pipeline.name}: "
                      f"{pipeline.model_warning}")


@pipelines_app.command("show", short_help="Print a pipeline's request and its schema.")
def pipelines_show(name: Annotated[str, typer.Argument(help="The pipeline's name.")]) -> None:
    """Print a pipeline's request as sent (a placeholder for the document) and its schema."""
    chosen = get_pipeline(name, settings().pipelines)
    body = chosen.request("{document text}")
    console.print_json(data={"name": chosen.name, "version": chosen.version,
                             "source": chosen.source, "request": body})
