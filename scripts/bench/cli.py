"""Command line: the outer run, the inner run (--inner, internal) or --report."""

import argparse
import json

from . import __doc__ as DOC


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench", description=DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, ~3 minutes")
    ap.add_argument("--binary", default="target/release/pitrkit", help="the pitrkit binary to benchmark")
    ap.add_argument("--inner", metavar="WORKDIR", help=argparse.SUPPRESS)
    ap.add_argument("--report", metavar="RESULTS_JSON", help="only print the report of an earlier results.json")
    args = ap.parse_args()
    if args.report:
        from .report import report

        with open(args.report) as f:
            print(report(json.load(f)))
        return 0
    if args.inner:
        from .inner import inner

        return inner(args.inner)
    from .outer import outer

    return outer(args)
