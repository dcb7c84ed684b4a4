"""The `featurelake` command line: one app, one subcommand per job.

    featurelake generate --start 2026-01-01 --end 2026-03-31 --users 5000 --seed 7 --lake ./data

The lake defaults to $AIRFLOW_VAR_FEATURELAKE_LAKE, the same setting the DAGs read.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from featurelake.synthetic import DEFAULT_WORKERS, MESSY_ROW_KINDS, GenerationSummary, generate_lake

LAKE_ENVVAR = "AIRFLOW_VAR_FEATURELAKE_LAKE"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

app = typer.Typer(
    name="featurelake",
    help="featurelake: synthetic raw data for the lake, and the merchant profile API sandbox.",
    no_args_is_help=True,
    add_completion=False,
)
stdout = Console()
stderr = Console(stderr=True)


@app.callback()
def main(
    log_level: Annotated[
        str, typer.Option("--log-level", help="Logging level: DEBUG, INFO, WARNING or ERROR.")
    ] = "WARNING",
) -> None:
    """Configure logging once for every subcommand."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(
            f"unknown log level {log_level!r}; use DEBUG, INFO, WARNING or ERROR", param_hint="--log-level"
        )
    logging.basicConfig(
        level=level, format="%(message)s", datefmt="[%X]", handlers=[RichHandler(console=stderr)]
    )


def parse_date(value: str) -> date:
    """A calendar date written YYYY-MM-DD; a bad one names what is wrong with it (no such day, or
    another form)."""
    if not _ISO_DATE.fullmatch(value.strip()):
        raise typer.BadParameter(f"{value} is not a date in the form YYYY-MM-DD, such as 2026-07-01")
    try:
        return date.fromisoformat(value.strip())
    except ValueError as error:  # 2026-02-30: the form is right, the day does not exist
        raise typer.BadParameter(f"{value} is not a date: {error}; use YYYY-MM-DD") from error


@app.command()
def generate(
    start: Annotated[
        date, typer.Option(parser=parse_date, metavar="YYYY-MM-DD", help="First date (UTC), YYYY-MM-DD.")
    ],
    end: Annotated[
        date, typer.Option(parser=parse_date, metavar="YYYY-MM-DD", help="Last date (UTC), included.")
    ],
    users: Annotated[int, typer.Option(help="Number of users in the population.")],
    seed: Annotated[int, typer.Option(help="Random seed: the same arguments give identical files.")],
    lake: Annotated[
        str, typer.Option(envvar=LAKE_ENVVAR, help="Lake root: a local directory or a file:// URI.")
    ],
    transactions_per_user_day: Annotated[
        float, typer.Option(help="Mean transactions per user per day.")
    ] = 0.5,
    workers: Annotated[
        int, typer.Option(help="Threads building dates at once; the files do not depend on it.")
    ] = DEFAULT_WORKERS,
) -> None:
    """Write deterministic raw transactions (one partition per date) and the categories lookup."""
    days = (end - start).days + 1
    progress = Progress(
        TextColumn("[bold]generate[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    task = progress.add_task("", total=max(days, 0), rows=0)
    written = 0

    def advance(day: date, rows: int) -> None:
        nonlocal written
        written += rows
        progress.update(task, advance=1, description=day.isoformat(), rows=written)

    try:
        with progress:
            summary = generate_lake(
                lake=lake,
                start=start,
                end=end,
                users=users,
                seed=seed,
                transactions_per_user_day=transactions_per_user_day,
                progress=advance,
                workers=workers,
            )
    except ValueError as error:
        refuse(str(error), error)
    except OSError as error:  # the lake is a file, or not writable, or the disk is full
        where = f": {error.filename}" if error.filename else ""
        refuse(
            f"cannot write the lake {lake}: {error.strerror or error}{where}; "
            "pass --lake a writable directory (it is created when missing)",
            error,
        )
    except MemoryError as error:
        refuse(
            f"out of memory generating {users:,} users at {transactions_per_user_day} transactions per "
            f"user per day with {workers} worker(s); lower --users, --transactions-per-user-day or --workers",
            error,
        )
    stdout.print(summary_table(summary))


@app.command("merchant-api")
def merchant_api(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on, 1 to 65535.")] = 8089,
    rate: Annotated[int, typer.Option(help="Requests per second before it answers 429.")] = 50,
    host: Annotated[
        str, typer.Option(help="Address to listen on: 0.0.0.0 in a container that other containers call.")
    ] = "127.0.0.1",
) -> None:
    """Serve the sandbox merchant profile API (GET /merchants/<id>) until interrupted."""
    from featurelake.merchant_api import serve_forever

    if rate < 1:
        raise typer.BadParameter(f"must be at least 1 request per second, got {rate}", param_hint="--rate")

    def serving(url: str) -> None:
        stdout.print(f"merchant API sandbox on {url}, {rate} requests/s (Ctrl-C stops)")

    try:
        serve_forever(port=port, rate=rate, host=host, serving=serving)
    except OSError as error:  # the address is taken, or not this machine's
        refuse(f"cannot listen on {host}:{port}: {error.strerror}; pass another --port or --host", error)


def refuse(message: str, error: BaseException) -> NoReturn:
    """Print `message` as the error (verbatim: a path may hold [brackets]; no line breaks inside
    paths) and exit with code 2, as for a bad argument."""
    stderr.print("[red]error:[/] " + escape(message), soft_wrap=True)
    raise typer.Exit(code=2) from error


def summary_table(summary: GenerationSummary) -> Table:
    """A short report of one generate run: volumes, messy rows by kind, and speed."""
    table = Table(title="featurelake generate", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right", overflow="fold")  # a long lake path: whole, on more lines
    table.add_row("lake", Text(str(summary.lake)))  # a path, not markup: it may hold [brackets]
    table.add_row("dates", f"{summary.start} .. {summary.end} ({len(summary.rows_by_date)})")
    table.add_row("users / seed", f"{summary.users:,} / {summary.seed}")
    table.add_row("rows", f"{summary.total_rows:,}")
    total = max(summary.total_rows, 1)
    for kind in MESSY_ROW_KINDS:
        count = summary.messy_rows.get(kind, 0)
        table.add_row(f"  {kind}", f"{count:,} ({count / total:.2%})")
    table.add_row("seconds", f"{summary.seconds:.2f}")
    table.add_row("rows/s", f"{summary.rows_per_second:,.0f}")
    return table


if __name__ == "__main__":
    app()
