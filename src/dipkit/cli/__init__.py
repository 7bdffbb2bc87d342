"""The ``dipkit`` command line.

Each verb is a :class:`~dipkit.cli.common.Verb` (help line, description, ``add_arguments(parser)``,
``run(args) -> int``) defined in a module of this package; :data:`VERBS` says where. The modules
import the library (torch, deepinv) only inside ``run``. Bad input never shows a traceback: it
prints one line ``dipkit: error: …`` on stderr and exits with code 2 (input files are read through
:mod:`dipkit.io.guard`, which turns every defect of a file into such a line naming the file).

Exit codes: 0 success; 1 ``dipkit bench`` ran but some runs failed (an unexpected exception, i.e. a
bug, also exits 1, with Python's traceback); 2 bad input: a usage error, a bad setting, an unreadable
or wrong input file (:class:`~dipkit.errors.DipkitError`, or an ``OSError`` such as an unwritable
output); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import DipkitError
from .common import Parser, Verb

__all__ = ["main", "build_parser", "VERBS", "get_verb"]

#: ``verb -> "module:attribute"`` of its :class:`Verb`, in the order ``dipkit --help`` lists them
VERBS: dict[str, str] = {
    "simulate": "dipkit.cli.simulate:SIMULATE",
    "import": "dipkit.cli.import_:IMPORT",
    "reconstruct": "dipkit.cli.reconstruct:RECONSTRUCT",
    "show": "dipkit.cli.show:SHOW",
    "tune": "dipkit.cli.tune:TUNE",
    "bench": "dipkit.cli.bench:BENCH",
    "train-denoiser": "dipkit.cli.train:TRAIN_DENOISER",
    "pretrain": "dipkit.cli.pretrain:PRETRAIN",
    "analyze": "dipkit.cli.analyze:ANALYZE",
    "methods": "dipkit.cli.listing:METHODS",
    "samples": "dipkit.cli.listing:SAMPLES",
    "nets": "dipkit.cli.listing:NETS",
    "demo": "dipkit.cli.demo:DEMO",
}


def get_verb(name: str) -> Verb:
    module, _, attr = VERBS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_parser(verbs=None) -> argparse.ArgumentParser:
    """The parser; the arguments of only ``verbs`` (default: all) are added — ``main`` adds just
    the invoked verb's, so that ``dipkit --help`` or ``dipkit methods`` imports nothing heavy."""
    p = Parser(prog="dipkit", description="Deep Image Prior reconstructions from a single measurement.")
    p.add_argument("--version", action="version", version=f"dipkit {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    for name in VERBS:
        verb = get_verb(name)
        e = sub.add_parser(name, help=verb.help, description=verb.description or verb.help)
        if verb.add_arguments is not None and (verbs is None or name in verbs):
            verb.add_arguments(e)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser([a for a in argv if a in VERBS][:1])
        args = parser.parse_args(argv)
        if not args.verb:
            parser.print_help()
            return 2
        return get_verb(args.verb).run(args)
    except DipkitError as exc:
        msg = " ".join(str(exc).split())
        print(f"dipkit: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dipkit: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"dipkit: error: {exc.strerror or exc}"
              + (f": {exc.filename}" if getattr(exc, "filename", None) else ""), file=sys.stderr)
        return 2
