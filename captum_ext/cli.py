"""The ``captum-ext`` command.

* ``captum-ext demo``: every CAM on the pretrained EfficientNet-Lite0 over the bundled photos;
  writes a PNG grid of the maps and a table of per-method time.
* ``captum-ext methods``: the catalogue, with each method's paper, cost and supported data.

Exit codes: 0 on success, 1 when the work fails (a message says why), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

__all__ = ["main"]

logger = logging.getLogger("captum_ext.cli")


def _demo(args: argparse.Namespace) -> int:
    from captum_ext.demo import run_demo
    from captum_ext.registry import get_method

    methods = [get_method(m).name for m in args.methods] if args.methods else None
    result = run_demo(args.out, photos=args.photos, methods=methods, show_progress=not args.quiet)
    print(result.table_path.read_text())
    print(f"grid:  {result.grid_path}")
    print(f"table: {result.table_path}")
    print(f"json:  {result.json_path}")
    return 0


def _methods(args: argparse.Namespace) -> int:
    from captum_ext.registry import METHODS

    rows = [("method", "kind", "paper", "cost", "data")]
    for info in METHODS.values():
        kind = info.kind + (" (Captum built-in)" if info.is_captum_builtin else "")
        rows.append((info.name, kind, info.paper, info.cost, info.ranks))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-ext", description="Published explanation methods as Captum attributions."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run every CAM on EfficientNet-Lite0 over the bundled photos"
    )
    demo.add_argument("--out", default="captum-ext-out", help="output folder (default: %(default)s)")
    demo.add_argument("--photos", nargs="+", help="photo names (default: all bundled photos)")
    demo.add_argument("--methods", nargs="+", help="method names (default: all CAMs)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    methods = commands.add_parser("methods", help="list the methods")
    methods.set_defaults(run=_methods)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        print(f"captum-ext: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
