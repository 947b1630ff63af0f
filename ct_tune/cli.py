"""The ct-tune command line: the one place that ties facts, rules, engine and output together.

Exit status (man ct-tune(8)): audit follows the monitoring-plugin convention,
0 ok, 1 warning, 2 critical, 3 unknown; every other command exits 0 on success
and 3 on bad input or usage errors.  Errors are one line on stderr, never a
traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

# Only what every command needs: the rest (jinja2 through the rule engine, tabulate,
# the table readers) is imported by the commands that use it, to keep startup short.
from ct_tune import __version__, facts, safeio, writers
from ct_tune.errors import EXIT_OK, EXIT_UNKNOWN, CtTuneError
from ct_tune.errors import collect as collect_errors

if TYPE_CHECKING:
    from ct_tune import plan, profiles, ruleset
    from ct_tune.findings import Finding


class OutputError(CtTuneError):
    """Standard output cannot be written: closed, a pipe nobody reads, a full device."""

    def __init__(self, err: OSError | None = None) -> None:
        reason = (os.strerror(err.errno) if err is not None and err.errno
                  else str(err) if err is not None else os.strerror(errno.EBADF))
        super().__init__(f"stdout: {reason}")


def _out(text: str = "", nl: bool = True) -> None:
    """Write to stdout; any failure is an OutputError (click.echo would drop the text
    when stdout is closed, and click turns a broken pipe into exit 1)."""
    stream = sys.stdout
    if stream is None:  # started with fd 1 closed
        raise OutputError()
    try:
        stream.write(text + "\n" if nl else text)
    except OSError as e:
        _discard_stdout()
        raise OutputError(e) from None


def _flush_stdout() -> None:
    """Flush stdout now, so a write error is reported while stderr can still say so."""
    stream = getattr(sys.stdout, "wrapped", sys.stdout)
    if stream is None:
        return
    try:
        stream.flush()
    except OSError as e:
        _discard_stdout()
        raise OutputError(e) from None


def _from_click_echo(e: BaseException) -> bool:
    """Whether e was raised writing click's own output (--help, --version, usage)."""
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "echo" and code.co_filename.endswith(os.path.join("click",
                                                                             "utils.py")):
            return True
        tb = tb.tb_next
    return False


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null: what is still buffered goes there, and the interpreter's
    flush at exit cannot fail a second time (Python's documented SIGPIPE pattern)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno() if sys.stdout is not None else 1)
        os.close(devnull)


def _err(line: str) -> None:
    """One line on stderr, if stderr can still take it."""
    with contextlib.suppress(OSError):
        click.echo(line, err=True)


class Context:
    """Options shared by every subcommand (roots and the rule search path)."""

    def __init__(self, procfs: str, sysfs: str, rules_dirs: tuple[str, ...],
                 builtin: bool, root: str | None = None) -> None:
        self.roots = facts.Roots(Path(procfs), Path(sysfs), Path(root) if root else None)
        self.rules_dirs = rules_dirs
        self.builtin = builtin

    def rules(self) -> list[ruleset.Rule]:
        from ct_tune import ruleset

        return ruleset.load(self.rules_dirs, builtin=self.builtin)

    def profiles(self) -> dict[str, profiles.Profile]:
        from ct_tune import profiles

        # Profiles always include the shipped ones: --no-builtin-rules is about rules.
        return profiles.load(self.rules_dirs, builtin=True)


_root_options = [
    click.option("--procfs", default="/proc", show_default=True, metavar="DIR",
                 help="Where procfs is mounted or was captured."),
    click.option("--sysfs", default="/sys", show_default=True, metavar="DIR",
                 help="Where sysfs is mounted or was captured."),
    click.option("--rules-dir", "rules_dirs", multiple=True, metavar="DIR",
                 type=click.Path(file_okay=False),
                 help="Extra rules directory (repeatable; later ones win)."),
    click.option("--no-builtin-rules", is_flag=True, help="Do not load the shipped rules."),
]


_sample_options = [
    click.option("--no-sample", is_flag=True, help="Do not read the conntrack table."),
    click.option("--sample-limit", type=click.IntRange(min=1), metavar="N",
                 help="Read at most N entries and scale counts to the table size."),
    click.option("--duration", type=click.FloatRange(min=0), default=0, show_default=True,
                 metavar="S", help="Also poll the count and counters for S seconds "
                 "(0: one pass over the table and one read of the counters)."),
    click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
                 metavar="I", help="Seconds between polls during --duration."),
    click.option("--table-source", type=click.Choice(["auto", "procfs", "conntrack"]),
                 default="auto", show_default=True,
                 help="Read the table from /proc/net/nf_conntrack or 'conntrack -L'."),
]


def sample_options(f: Any) -> Any:
    for opt in reversed(_sample_options):
        f = opt(f)
    return f


def _progress(elapsed: float, duration: float, count: int | None) -> None:
    """A progress line on stderr, only when stderr is a terminal."""
    if sys.stderr.isatty():
        click.echo(f"\rsampling {elapsed:5.1f}/{duration:.0f} s, count {count}", err=True,
                   nl=False)


def gather(roots: facts.Roots, no_sample: bool, sample_limit: int | None,
           table_source: str = "auto", duration: float = 0, interval: float = 1.0
           ) -> dict[str, Any]:
    """Facts of this host, with the table sample unless told not to."""
    from ct_tune import sampler

    dump = roots.proc("net/nf_conntrack")
    early = None
    if not no_sample and table_source != "conntrack" and dump.is_file():
        # The kernel starts printing the table (into the reader's pipe) while we gather
        # the facts; a table that cannot be opened is opened again below, which says why.
        with contextlib.suppress(CtTuneError):
            early = sampler.OpenTable(roots, table_source)
    try:
        host = facts.collect(roots)
        _report_problems(host)
        host["writers"] = writers.collect(roots)
        sampler.fill_missing_stat(roots, host)
        # A captured tree without a table dump just has no sample; a live host says why.
        if not no_sample and host["conntrack"]["loaded"] and (
                roots.live or dump.exists()):
            from ct_tune import ctsource, sockets

            # The sample's CLOSE_WAIT entries are read against this namespace's sockets.
            # Read first: walking the TCP hash takes ~10 ms of kernel time, spent here
            # while the reader's CPU is still printing the table, not after it.
            found = facts.Problems()
            socks = sockets.collect(roots, found)
            try:
                host["flows"] = sampler.sample(roots, host, sample_limit, table_source,
                                               early)
            except ctsource.SourceError as e:
                click.echo(f"ct-tune: warning: table not sampled: {e}", err=True)
            if host.get("flows") is not None:
                host["sockets"] = socks
                host["errors"] = [*host.get("errors", []), *found.items]
                _report_problems({"errors": found.items})
    finally:
        if early is not None:  # unread (nothing to sample after all): its errors do not matter
            with contextlib.suppress(CtTuneError):
                early.close()
    if not no_sample and duration > 0 and host["conntrack"]["loaded"]:
        host["window"] = sampler.poll(roots, duration, interval, _progress,
                                      host.get("namespaces"))
        _report_discarded(host["window"])
        if sys.stderr.isatty():
            click.echo("", err=True)
    return host


def _report_discarded(window: dict[str, Any]) -> None:
    """One warning line per distinct reading the polling threw away (sampler.poll)."""
    for line in window["discarded"]["problems"]:
        click.echo(f"ct-tune: warning: {line} (poll discarded)", err=True)


def _report_problems(host: dict[str, Any]) -> None:
    """Every input problem, one ``ct-tune: PATH: what is wrong`` line each on stderr: the
    facts they concern are unknown, and so are the findings that needed them."""
    errors = host.get("errors")
    if not errors:
        return
    from ct_tune.findings import error_text  # not imported by a collect without problems

    for err in errors:
        click.echo(f"ct-tune: {error_text(err)}", err=True)


def _complete_rule(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of rule ids (the shipped rules and --rules-dir given so far)."""
    from ct_tune import ruleset

    try:
        rules = ruleset.load(ctx.params.get("rules_dirs") or (),
                             builtin=not ctx.params.get("no_builtin_rules"))
    except CtTuneError:
        return []
    return sorted(r.id for r in rules if r.id.startswith(incomplete))


def _complete_profile(ctx: click.Context, param: click.Parameter, incomplete: str
                      ) -> list[str]:
    """Shell completion of profile names."""
    from ct_tune import profiles

    try:
        names = profiles.load(ctx.params.get("rules_dirs") or ())
    except CtTuneError:
        return []
    return sorted(n for n in names if n.startswith(incomplete))


def root_options(f: Any) -> Any:
    for opt in reversed(_root_options):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ct-tune")
def cli() -> None:
    """Analyze and tune Linux connection tracking (nf_conntrack)."""


def _ctx(procfs: str, sysfs: str, rules_dirs: tuple[str, ...], no_builtin: bool,
         root: str | None = None) -> Context:
    return Context(procfs, sysfs, rules_dirs, not no_builtin, root)


_root_dir_option = click.option(
    "--root", metavar="DIR", type=click.Path(file_okay=False),
    help="Where /etc, /run and /usr/lib are: sysctl.d, modules-load.d, modprobe.d "
    "[default: / for this host, the capture's top directory with --procfs].")


def _meta(host: dict[str, Any], profile: str, name: str) -> Any:
    import datetime as dt

    from ct_tune import fragments

    return fragments.Meta(version=__version__, profile=profile, name=name,
                          date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                          hostname=host["host"].get("hostname"))


def _textfile_name(ctx: click.Context, param: click.Parameter, value: str | None
                   ) -> str | None:
    if value is None:
        return None
    from ct_tune import textfile

    if os.path.isdir(value) or not textfile.valid_name(os.path.basename(value)):
        raise click.BadParameter(f"{value}: must be a file name ending in "
                                 f"{textfile.SUFFIX} (node_exporter's textfile collector "
                                 "reads only those)", ctx=ctx, param=param)
    return value


_textfile_option = click.option(
    "--textfile", metavar="PATH", callback=_textfile_name,
    help="Also write the result as Prometheus metrics (ct_tune_* gauges) to PATH, a *.prom "
    "file in node_exporter's --collector.textfile.directory; replaced atomically, and "
    "written with ct_tune_last_run_success 0 when the run fails on bad input.")


def _write_textfile(path: str, report: dict[str, Any] | None, status: str | None = None
                    ) -> None:
    import time

    from ct_tune import textfile
    from ct_tune.atomic import write_atomic

    text = textfile.render(report, time.time(), status, __version__)
    write_atomic(Path(path), text.encode(), mode=0o644)


def _textfile_on_failure(command: Any) -> Any:
    """Bad input still leaves a textfile, with ct_tune_last_run_success 0, so the alert on
    it fires instead of node_exporter serving the last good run's numbers.  (Output that
    cannot be written comes after the textfile: that run's file stands.)"""
    import functools

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OutputError:
            raise
        except CtTuneError:
            if kwargs.get("textfile"):
                with contextlib.suppress(CtTuneError):
                    _write_textfile(kwargs["textfile"], None)
            raise

    return run


@cli.command()
@root_options
@_root_dir_option
@click.option("--facts", "facts_file", metavar="FILE",
              help="Audit a snapshot written by 'ct-tune collect' instead of this host.")
@click.option("--profile", default="default", show_default=True, shell_complete=_complete_profile,
              help="Targets to tune for (see 'ct-tune profiles list').")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "sysctl", "html"]),
              default="table", show_default=True,
              help="sysctl: print only the sysctl.d fragment 'apply' would write; html: a "
              "self-contained page with charts (needs the 'report' extra).")
@click.option("-o", "--output", metavar="FILE",
              help="With --format json or html: write to FILE (replaced atomically) instead "
              "of stdout.")
@click.option("--explain", is_flag=True, help="Show the arithmetic and evidence per finding.")
@click.option("--all", "show_all", is_flag=True,
              help="Table: also show the checks that passed (severity ok).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True,
              help="Colour the severities: auto on a terminal unless NO_COLOR is set.")
@click.option("--allow-lower", is_flag=True,
              help="With --format sysctl: let the fragment lower nf_conntrack_max.")
@click.option("--name", default="99-ct-tune.conf", show_default=True,
              help="With --format sysctl: the fragment's file name (for its header).")
@sample_options
@_textfile_option
@_textfile_on_failure
def audit(procfs: str, sysfs: str, rules_dirs: tuple[str, ...], no_builtin_rules: bool,
          root: str | None, facts_file: str | None, profile: str, fmt: str, output: str | None,
          explain: bool, show_all: bool, color: str, allow_lower: bool, name: str,
          no_sample: bool,
          sample_limit: int | None, duration: float, interval: float, table_source: str,
          textfile: str | None) -> None:
    """Report findings about connection tracking; exit 0/1/2/3 = ok/warning/critical/unknown."""
    from ct_tune import engine, findings, profiles, render, snapshot

    if output is not None and fmt not in ("json", "html"):
        raise click.UsageError("-o/--output: only with --format json or html")
    if fmt == "html":
        from ct_tune import html_report

        html_report.require()  # before any sampling: says which extra to install

    c = _ctx(procfs, sysfs, rules_dirs, no_builtin_rules, root)
    all_profiles, loaded_rules = collect_errors(c.profiles, c.rules)  # every bad file reported
    prof = profiles.get(all_profiles, profile)
    if facts_file:
        host = snapshot.load(facts_file)
        _report_problems(host)
    else:
        host = gather(c.roots, no_sample, sample_limit, table_source, duration, interval)
    result = engine.evaluate(loaded_rules, host, prof)
    state = findings.status(result, host.get("errors") or [])
    if textfile:
        _write_textfile(textfile, render.report(result, host, state, prof.name))
    if fmt in ("json", "html"):
        doc = render.report(result, host, state, prof.name)
        if fmt == "json":
            _emit(json.dumps(doc, indent=2) + "\n", output)
        else:
            _emit(html_report.render_audit(doc), output)
    elif fmt == "sysctl":
        from ct_tune import fragments

        p = _plan(loaded_rules, host, prof, allow_lower, result)
        meta = _meta(host, prof.name, name)
        text = fragments.render(p, meta).get(fragments.sysctl_path(meta))
        _out(text if text else "# ct-tune: nothing this host may set\n", nl=False)
        for skip in p.skips:
            click.echo(f"ct-tune: not in the fragment: {skip.key}: {skip.reason}", err=True)
        for note in p.notes:
            click.echo(f"ct-tune: note: {note}", err=True)
        if host["conntrack"]["initial_netns"] is False:
            click.echo("ct-tune: note: not the initial network namespace: boot applies "
                       "sysctl.d to the host's namespace, not this one; set these in the pod "
                       "or container spec ('ct-tune apply' here prints how)", err=True)
        else:
            _warn_overrides(host, name, p)
    else:
        from ct_tune import termtable

        style = termtable.terminal_style(color, sys.stdout, os.environ)
        _out(render.audit_text(result, host, state, prof.name, style, show_all,
                               {r.id: dict(r.units) for r in loaded_rules} if explain
                               else None))
    sys.exit(findings.exit_code(state))


def _emit(text: str, output: str | None) -> None:
    """The document on stdout, or in FILE replaced atomically (never half-written)."""
    if output is None or output == "-":
        _out(text, nl=False)
    else:
        from ct_tune.atomic import write_atomic

        write_atomic(Path(output), text.encode(), mode=0o644, into_special=True)


@cli.command("fleet")
@click.option("--rules-dir", "rules_dirs", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Extra rules directory (repeatable; later ones win).")
@click.option("--no-builtin-rules", is_flag=True, help="Do not load the shipped rules.")
@click.option("--profile", default="default", show_default=True,
              help="Targets to tune for (see 'ct-tune profiles list').")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]),
              default="table", show_default=True,
              help="json: the ct-tune-fleet/1 document (ct-tune(8)); html: a self-contained "
              "page with charts (needs the 'report' extra).")
@click.option("-o", "--output", metavar="FILE",
              help="With --format json or html: write to FILE (replaced atomically) instead "
              "of stdout.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), metavar="N",
              help="Audit in N processes [default: the CPUs this process may use].")
@click.argument("snapshots", nargs=-1, required=True, metavar="SNAPSHOT_OR_DIR...")
def fleet_cmd(rules_dirs: tuple[str, ...], no_builtin_rules: bool, profile: str, fmt: str,
              output: str | None, jobs: int | None, snapshots: tuple[str, ...]) -> None:
    """Audit many 'ct-tune collect' snapshots (a directory: its *.json files): hosts
    worst first and how many hosts share each finding; exit 0/1/2/3 by the worst host."""
    from ct_tune import fleet, fleet_input, profiles

    if output is not None and fmt not in ("json", "html"):
        raise click.UsageError("-o/--output: only with --format json or html")
    if fmt == "html":
        from ct_tune import html_report

        html_report.require()  # before reading thousands of snapshots
    c = _ctx("/proc", "/sys", rules_dirs, no_builtin_rules)
    all_profiles, loaded_rules = collect_errors(c.profiles, c.rules)  # every bad file reported
    prof = profiles.get(all_profiles, profile)
    hosts, skipped = [], []
    jobs = jobs or len(os.sched_getaffinity(0))
    for item, problems in fleet_input.audit_all(snapshots, loaded_rules, prof, jobs):
        for line in problems:  # read as unknown, as audit --facts does
            click.echo(f"ct-tune: {item.source}: {line}", err=True)
        if isinstance(item, fleet.Skipped):
            for line in item.errors:
                click.echo(f"ct-tune: {line}", err=True)
            skipped.append(item)
        else:
            hosts.append(item)
    report = fleet.build(hosts, skipped)
    if fmt == "json":
        _emit(json.dumps(fleet.to_json(report), indent=1) + "\n", output)
    elif fmt == "html":
        _emit(html_report.render_fleet(fleet.to_json(report)), output)
    else:
        from ct_tune import fleet_table

        _out(fleet_table.render(report))
    sys.exit(fleet.exit_code(report))


class _PluginCommand(click.Command):
    """A monitoring plugin's usage error is still a status line on stdout and UNKNOWN (3),
    never click's 2, which a monitoring system reads as CRITICAL."""

    def _unknown(self, e: click.UsageError) -> None:
        from ct_tune import check

        with contextlib.suppress(OutputError):
            _out(check.unknown(f"usage: {e.format_message()}"))

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            self._unknown(e)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            self._unknown(e)
            raise


@cli.command("check", cls=_PluginCommand)
@root_options
@click.option("--facts", "facts_file", metavar="FILE",
              help="Check a snapshot written by 'ct-tune collect' instead of this host.")
@click.option("--profile", default="default", show_default=True, shell_complete=_complete_profile,
              help="Targets to tune for (see 'ct-tune profiles list').")
@click.option("-w", "--warning", type=click.FloatRange(0, 100), default=75.0,
              show_default=True, metavar="PCT",
              help="WARNING when entries exceed PCT % of nf_conntrack_max (node_exporter's "
              "node-mixin alert NodeHighNumberConntrackEntriesUsed fires above 75 %).")
@click.option("-c", "--critical", type=click.FloatRange(0, 100), default=95.0,
              show_default=True, metavar="PCT",
              help="CRITICAL above PCT % (netdata's netfilter_conntrack_full, "
              "health.d/netfilter.conf, is critical above 95 %).")
@click.option("--sample", is_flag=True,
              help="Also read the conntrack table (flow-mix findings; slow on a busy host).")
@click.option("--sample-limit", type=click.IntRange(min=1), metavar="N",
              help="With --sample: read at most N entries.")
@click.option("--duration", type=click.FloatRange(min=0), default=0, show_default=True,
              metavar="S", help="Poll the count and counters for S seconds: peak entries, "
              "drop and insert_failed rates in the perfdata.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              metavar="I", help="Seconds between polls during --duration.")
@click.option("--table-source", type=click.Choice(["auto", "procfs", "conntrack"]),
              default="auto", show_default=True, help="With --sample: where to read the table.")
@_textfile_option
def check_cmd(procfs: str, sysfs: str, rules_dirs: tuple[str, ...], no_builtin_rules: bool,
              facts_file: str | None, profile: str, warning: float, critical: float,
              sample: bool, sample_limit: int | None, duration: float, interval: float,
              table_source: str, textfile: str | None) -> None:
    """Monitoring plugin (Nagios, Icinga): one status line with perfdata; exit 0/1/2/3."""
    from ct_tune import check

    if warning > critical:
        raise click.BadParameter(f"the warning threshold ({warning:g}) is above the critical "
                                 f"one ({critical:g})", param_hint="--warning")
    try:
        state, text = _check_run(procfs, sysfs, rules_dirs, no_builtin_rules,
                                 facts_file=facts_file, profile=profile, warning=warning,
                                 critical=critical, sample=sample, sample_limit=sample_limit,
                                 duration=duration, interval=interval,
                                 table_source=table_source, textfile=textfile)
    except CtTuneError as e:
        _out(check.unknown(str(e)))
        sys.exit(EXIT_UNKNOWN)
    _out(text)
    sys.exit(check.STATES[state])


@_textfile_on_failure
def _check_run(procfs: str, sysfs: str, rules_dirs: tuple[str, ...], no_builtin_rules: bool,
               *, facts_file: str | None, profile: str, warning: float, critical: float,
               sample: bool, sample_limit: int | None, duration: float, interval: float,
               table_source: str, textfile: str | None) -> tuple[str, str]:
    """check's state and output; the textfile written (or its failure file)."""
    from ct_tune import check, engine, findings, profiles, render, sampler, snapshot
    from ct_tune.errors import collect as collect_errors

    c = _ctx(procfs, sysfs, rules_dirs, no_builtin_rules)
    all_profiles, loaded_rules = collect_errors(c.profiles, c.rules)  # every bad file reported
    prof = profiles.get(all_profiles, profile)
    if facts_file:
        host = snapshot.load(facts_file)
    else:
        host = gather(c.roots, not sample, sample_limit, table_source,
                      duration if sample else 0, interval)
        if not sample and duration > 0 and host["conntrack"]["loaded"]:
            host["window"] = sampler.poll(c.roots, duration, interval, _progress,
                                          host.get("namespaces"))
            _report_discarded(host["window"])
    result = engine.evaluate(loaded_rules, host, prof)
    report = render.report(result, host, findings.status(result, host.get("errors") or []),
                           prof.name)
    state, text = check.evaluate(report, warning, critical)
    if textfile:
        _write_textfile(textfile, report, state)
    return state, text


def _plan(loaded_rules: list[ruleset.Rule], host: dict[str, Any], prof: profiles.Profile,
          allow_lower: bool, result: list[Finding]) -> plan.Plan:
    """The plan apply carries out and --format sysctl shows.  When it keeps a value its
    rule would change (max only raised; a host-only key), the rules run again with that
    value kept, so buckets and the memory budget are sized for what stays, not for a
    max that is never written."""
    from ct_tune import engine
    from ct_tune import plan as planning

    p = planning.build(result, host, prof, allow_lower)
    if p.kept:
        p = planning.build(engine.evaluate(loaded_rules, host, prof, keep=p.kept), host, prof,
                           allow_lower)
    return p


_apply_format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="json: one document on stdout, also when it fails: planned and done changes, "
    "'changed', skips, the state file, error.reason (man ct-tune-json(5)).")


def _json_on_failure(command: str) -> Any:
    """With --format json a failure is still one document on stdout, error.reason telling
    busy, not-root, read-only ... apart; with what the run had planned once it got that far
    (the command fills `planned`)."""
    import functools

    def wrap(run: Any) -> Any:
        @functools.wraps(run)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            from ct_tune import applyreport

            planned: dict[str, Any] = {}
            try:
                return run(*args, planned=planned, **kwargs)
            except CtTuneError as e:
                if kwargs.get("fmt") == "json":
                    procfs = planned.get("procfs") or kwargs.get("procfs")
                    _out(json.dumps(applyreport.failure(
                        e, command=command, dry_run=kwargs["dry_run"],
                        root=Path(planned.get("root") or kwargs.get("root") or "/"),
                        procfs=Path(procfs) if procfs else None, exit_code=e.exit_code,
                        partial=planned if "schema" in planned else None), indent=2))
                raise

        return wrapped

    return wrap


@cli.command("apply")
@root_options
@_root_dir_option
@click.option("--profile", default="default", show_default=True, shell_complete=_complete_profile,
              help="Targets to tune for (see 'ct-tune profiles list').")
@click.option("--dry-run", is_flag=True,
              help="Show the file diffs and live values that would change; change nothing.")
@click.option("--live/--no-live", default=True, show_default=True,
              help="Also write the live values under /proc/sys.")
@click.option("--allow-lower", is_flag=True, help="Allow lowering nf_conntrack_max.")
@click.option("--name", default="99-ct-tune.conf", show_default=True,
              help="File name of the sysctl.d fragment (sorts after distribution files).")
@click.option("--lock-wait", type=click.FloatRange(min=0), default=5.0, show_default=True,
              metavar="S", help="Wait this long for another apply/rollback, then exit 4.")
@_apply_format_option
@sample_options
@_json_on_failure("apply")
def apply_cmd(procfs: str, sysfs: str, rules_dirs: tuple[str, ...], no_builtin_rules: bool,
              root: str | None, profile: str, dry_run: bool, live: bool, allow_lower: bool,
              name: str, lock_wait: float, fmt: str, no_sample: bool, sample_limit: int | None,
              duration: float, interval: float, table_source: str, planned: dict[str, Any]
              ) -> None:
    """Make the recommendations take effect now and at every boot, or change nothing."""
    from ct_tune import apply, applyreport, engine, fragments, profiles, render

    if not apply.valid_name(name):
        raise click.BadParameter("must be a file name ending in .conf", param_hint="--name")
    c = _ctx(procfs, sysfs, rules_dirs, no_builtin_rules, root)
    target = c.roots.config_root
    planned.update(root=str(target), procfs=str(c.roots.procfs))  # for a failure's report
    js = fmt == "json"
    if not dry_run:
        apply.require_root(target, live and c.roots.live)
    all_profiles, loaded_rules = collect_errors(c.profiles, c.rules)  # every bad file reported
    prof = profiles.get(all_profiles, profile)
    with (apply.locked(target, lock_wait) if not dry_run else _nolock()):
        host = gather(c.roots, no_sample, sample_limit, table_source, duration, interval)
        if host.get("errors"):
            # the problems are on stderr already: a host that could not be read whole is
            # not changed (exit 3, nothing changed), whatever the readable part says
            if js:
                _out(json.dumps(applyreport.unreadable(host["errors"], dry_run, target,
                                                       c.roots.procfs), indent=2))
            sys.exit(EXIT_UNKNOWN)
        # In a non-initial network namespace /etc is the host's (ip netns exec) or the
        # image's (a container): boot applies it to the initial namespace, never this one.
        persist = root is not None or host["conntrack"]["initial_netns"] is not False
        if not persist and not live:
            raise CtTuneError("--no-live in a non-initial network namespace changes nothing: "
                              "boot applies /etc/sysctl.d to the host's namespace, not this "
                              "one (give --root DIR to write the files anyway)",
                              reason="namespace")
        p = _plan(loaded_rules, host, prof, allow_lower, engine.evaluate(loaded_rules, host, prof))
        files = fragments.render(p, _meta(host, prof.name, name))
        ch = apply.changes(p, files, target, c.roots.procfs, live, persist=persist)
        notes = list(p.notes) if persist else [render.live_only_note(p.settings)]
        warnings = _warn_overrides(host, name, p) if persist else []
        if dry_run and not ch.empty:  # the prediction says what the real run will do
            try:
                apply.refuse_if_interrupted(target)
            except CtTuneError as e:
                warnings.append(f"the apply itself will refuse: {e}")
                click.echo(f"ct-tune: warning: {warnings[-1]}", err=True)
        planned.update(applyreport.report(
            ch, command="apply", dry_run=dry_run, root=target, procfs=c.roots.procfs,
            settings=p.settings, skips=p.skips, notes=notes, warnings=warnings,
            persist=persist, live=live, profile=prof.name))
        if not js:
            _out(render.changes(ch, p.skips, target, dry_run))
            for note in notes:
                _out(f"note: {note}" if persist else note)
        if dry_run or ch.empty:
            if js:
                _out(json.dumps(planned, indent=2))
            return
        apply.refuse_if_interrupted(target)
        _flush_stdout()  # output that cannot be written stops the apply before any change
        state = apply.execute(ch, target, c.roots.procfs, __version__,
                              temps=apply.writable_files(name))
        if js:
            _out(json.dumps({**planned, "state_file": str(state)}, indent=2))
            return
        _out(f"applied: {len(ch.live)} live value(s), {len(ch.files)} file(s); the "
             f"previous state is in {state}: 'ct-tune rollback' restores it")


@cli.command("rollback")
@click.option("--procfs", metavar="DIR",
              help="Must be where the apply wrote its live values (recorded in the state; "
              "the default).")
@click.option("--root", metavar="DIR", type=click.Path(file_okay=False),
              help="The --root the apply wrote to (its state is in DIR/var/lib/ct-tune) "
              "[default: /].")
@click.option("--dry-run", is_flag=True, help="Show what would be restored; change nothing.")
@click.option("--lock-wait", type=click.FloatRange(min=0), default=5.0, show_default=True,
              metavar="S", help="Wait this long for another apply/rollback, then exit 4.")
@_apply_format_option
@_json_on_failure("rollback")
def rollback_cmd(procfs: str | None, root: str | None, dry_run: bool, lock_wait: float,
                 fmt: str, planned: dict[str, Any]) -> None:
    """Restore the files and live values saved by the last apply that changed something."""
    from ct_tune import apply, applyreport, render

    target = Path(root or "/")
    js = fmt == "json"
    if not dry_run:
        # the running kernel is written only when the apply wrote live values
        # (an unprivileged 'apply --root SCRATCH --no-live' rolls back unprivileged)
        saved = apply.load_state(target)
        live_root = apply.rollback_procfs(saved, procfs)
        apply.require_root(target, kernel=os.path.realpath(live_root) == "/proc"
                           and bool(saved.live))
    with (apply.locked(target, lock_wait) if not dry_run else _nolock()):
        state = apply.load_state(target)
        live_root = apply.rollback_procfs(state, procfs)
        ch = apply.rollback_changes(target, state, live_root)
        planned.update(applyreport.report(ch, command="rollback", dry_run=dry_run, root=target,
                                          procfs=live_root, live=bool(state.live),
                                          restored_from=state.path))
        if state.path.name == apply.PENDING_FILE and not js:
            _out(f"an apply was interrupted: restoring the state it saved in {state.path}")
        if not js:
            _out(render.changes(ch, (), target, dry_run, verb="restore"))
        if dry_run:
            if js:
                _out(json.dumps(planned, indent=2))
            return
        _flush_stdout()
        apply.execute(ch, target, live_root, __version__, save=False,
                      temps=[rel for rel, _ in state.files])
        done = apply.finish_rollback(target, state)
        if js:
            _out(json.dumps({**planned, "state_file": str(done)}, indent=2))
            return
        _out(f"rolled back: {len(ch.live)} live value(s), {len(ch.files)} file(s); "
             f"the saved state is kept as {done}")


def _warn_overrides(host: dict[str, Any], name: str, p: Any) -> list[str]:
    """A file boot reads after ours that sets one of our keys wins at boot: say so (on
    stderr; returned for apply's JSON)."""
    from ct_tune import sysctld

    persist = host.get("persist") or {}
    out = []
    for a in sysctld.read_after(persist.get("assignments", []), name,
                                [s.key for s in p.settings]):
        out.append(f"{a['file']}:{a['line']} sets {a['key']} = {a['value']} and is read "
                   f"after {name} at boot: it overrides ct-tune's value")
        click.echo(f"ct-tune: warning: {out[-1]}", err=True)
    return out


def _nolock() -> Any:
    import contextlib

    return contextlib.nullcontext()


@cli.command()
@root_options
@click.option("-o", "--output", metavar="FILE", default="-", help="Write here (default stdout).")
@sample_options
def collect(procfs: str, sysfs: str, rules_dirs: tuple[str, ...], no_builtin_rules: bool,
            output: str, no_sample: bool, sample_limit: int | None, duration: float,
            interval: float, table_source: str) -> None:
    """Write this host's facts as versioned JSON, for 'audit --facts' elsewhere."""
    from ct_tune import snapshot

    roots = facts.Roots(Path(procfs), Path(sysfs))
    data = snapshot.dumps(gather(roots, no_sample, sample_limit, table_source, duration,
                                interval))
    if output == "-":
        _out(data, nl=False)
    else:
        from ct_tune.atomic import write_atomic

        write_atomic(Path(output), data.encode(), mode=0o644, into_special=True)


@cli.command()
@click.option("--procfs", default="/proc", show_default=True, metavar="DIR")
@click.option("--sysfs", default="/sys", show_default=True, metavar="DIR")
@click.option("--no-table", is_flag=True,
              help="Leave out the conntrack table dump (large on a busy host; the replay "
              "then has no sample).")
@click.option("--table-source", type=click.Choice(["auto", "procfs", "conntrack"]),
              default="auto", show_default=True,
              help="Read the table as audit's --table-source does: /proc/net/nf_conntrack "
              "or 'conntrack -L'.")
@click.argument("directory", type=click.Path(file_okay=False))
def capture(procfs: str, sysfs: str, no_table: bool, table_source: str,
            directory: str) -> None:
    """Copy the procfs/sysfs files ct-tune reads into DIRECTORY (replay with --procfs/--sysfs)."""
    from ct_tune.capture import capture as do_capture

    out = Path(directory)
    n = do_capture(facts.Roots(Path(procfs), Path(sysfs)), out, table=not no_table,
                   table_source=table_source)
    click.echo(f"captured {n} files; replay with: ct-tune audit --procfs {out / 'proc'} "
               f"--sysfs {out / 'sys'}", err=True)


@cli.group("rules")
def rules_group() -> None:
    """Inspect the rules on the search path."""


@rules_group.command("list")
@root_options
def rules_list(procfs: str, sysfs: str, rules_dirs: tuple[str, ...],
               no_builtin_rules: bool) -> None:
    """Each rule's id, worst severity, parameter and the file it came from, sorted by id."""
    from ct_tune import listings

    _out(listings.rules_table(_ctx(procfs, sysfs, rules_dirs, no_builtin_rules).rules()))


@rules_group.command("show")
@root_options
@click.argument("rule_id", shell_complete=_complete_rule)
def rules_show(procfs: str, sysfs: str, rules_dirs: tuple[str, ...], no_builtin_rules: bool,
               rule_id: str) -> None:
    """Print one rule file: its logic, explanation and sources are its documentation."""
    from ct_tune.suggest import did_you_mean

    rules = _ctx(procfs, sysfs, rules_dirs, no_builtin_rules).rules()
    for r in rules:
        if r.id == rule_id:
            _out(f"# {r.path}")
            _out(safeio.read_text(r.path, safeio.RULE), nl=False)
            return
    raise CtTuneError(f"no rule with id {rule_id!r}"
                      f"{did_you_mean(rule_id, (r.id for r in rules))} "
                      "(see 'ct-tune rules list')")


@cli.group("profiles")
def profiles_group() -> None:
    """Inspect the tuning profiles."""


@profiles_group.command("list")
@click.option("--rules-dir", "rules_dirs", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False))
def profiles_list(rules_dirs: tuple[str, ...]) -> None:
    """Each profile's name, description and file."""
    from tabulate import tabulate

    from ct_tune import profiles

    rows = [[p.name, p.description, p.path]
            for p in profiles.load(rules_dirs).values()]
    _out(tabulate(rows, headers=["name", "description", "file"],
                        maxcolwidths=[None, 60, None]))


@profiles_group.command("show")
@click.option("--rules-dir", "rules_dirs", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False))
@click.argument("name", shell_complete=_complete_profile)
def profiles_show(rules_dirs: tuple[str, ...], name: str) -> None:
    """One profile's targets, timeouts and floors (with what it extends merged in)."""
    from ct_tune import listings, profiles

    _out(listings.profile_text(profiles.get(profiles.load(rules_dirs), name,
                                            where="profiles show")))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: map every failure to one line and a documented status.

    Output that cannot be written (a closed stdout, a reader that went away, a full
    disk) is an error like any other: ``ct-tune: stdout: ...`` and exit 3, never a
    silent success or a status that reads as a finding.
    """
    code = _run(argv)
    try:
        _flush_stdout()
    except OutputError as e:
        _err(f"ct-tune: {e}")
        code = EXIT_UNKNOWN
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    """Run the command; its exit status, after reporting any failure on stderr."""
    try:
        rv = cli.main(args=argv, prog_name="ct-tune", standalone_mode=False)
        code = rv if isinstance(rv, int) else EXIT_OK
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else 1)
        if hasattr(sys.stdout, "wrapped"):
            # click met a broken pipe in its own output (--help): it wrapped stdout to
            # ignore it and exits 1, which reads as WARNING
            _discard_stdout()
            _err(f"ct-tune: {OutputError(OSError(errno.EPIPE, os.strerror(errno.EPIPE)))}")
            code = EXIT_UNKNOWN
    except CtTuneError as e:
        for line in str(e).split("\n"):  # InputErrors: one line per file at fault
            _err(f"ct-tune: {line}")
        code = e.exit_code
    except click.exceptions.Abort:
        _err("ct-tune: aborted")
        code = EXIT_UNKNOWN
    except click.ClickException as e:
        with contextlib.suppress(OSError):
            e.show()
        code = EXIT_UNKNOWN
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # a bug in ct-tune, not bad input: say so, keep it one line
        if isinstance(e, OSError) and _from_click_echo(e):  # click's own --help output
            _discard_stdout()
            _err(f"ct-tune: {OutputError(e)}")
            return EXIT_UNKNOWN
        if os.environ.get("CT_TUNE_DEBUG"):
            raise
        _err(f"ct-tune: internal error: {type(e).__name__}: {e} "
             "(set CT_TUNE_DEBUG=1 for a traceback and please report it)")
        code = EXIT_UNKNOWN
    return code
