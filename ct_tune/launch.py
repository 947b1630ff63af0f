"""The console entry point: start reading the live table, then load the rest.

``collect`` and ``audit`` on this host read /proc/net/nf_conntrack unless an option
says otherwise, and on a large table the kernel takes as long to print it as
everything else ct-tune does.  Importing click and ct-tune's modules takes about
50 ms before gather() could start the reader, and the kernel would print nothing
meanwhile; started here (reader.start_early) it prints the table while they load.
The guess needs no click: a command line it gets wrong only costs a reader started
for nothing (stopped when the table it read is not the one asked for: another
--procfs, another source) or one not started early (the regular path starts it).
"""

from __future__ import annotations

import gc
import sys

#: The commands that read the live table unless an option below says otherwise
COMMANDS = ("collect", "audit")
#: Options after which the live table is not read through /proc/net/nf_conntrack
#: now (or not at all): no sample, a snapshot, a captured tree, conntrack(8), help.
NOT_LIVE = ("--no-sample", "--facts", "--procfs", "--sysfs", "--table-source", "--help",
            "-h", "--version")
TABLE = "/proc/net/nf_conntrack"


def reads_live_table(argv: list[str]) -> bool:
    """Whether the command line (program name first) reads the live table at once."""
    if len(argv) < 2 or argv[1] not in COMMANDS:
        return False
    return not any(arg.split("=", 1)[0] in NOT_LIVE for arg in argv[2:])


def main() -> None:
    if reads_live_table(sys.argv):
        from ct_tune import reader

        reader.start_early(TABLE)
    from ct_tune.cli import main as cli_main

    try:
        cli_main()
    finally:
        # Whatever is left is freed by reference counting as the interpreter ends; the
        # last full collection would only walk it first: 7 ms after a large sample, all
        # of it on the wall-clock time of the command.
        gc.freeze()
