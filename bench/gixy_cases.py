"""How many of gixy-ng's own test cases nginxgen lint flags, per gixy check.

gixy-ng ships one small config per case under ``tests/plugins/simply/<check>/``: files
ending in ``_fp.conf`` must not be flagged, the others must. This runs ``nginxgen lint``
(its native rules, no gixy) on each and counts a case as flagged when a rule that stands for
that check (``Rule.gixy``) reports it. Negatives are counted at error level, as issue #12
sets the target (≥ 80 % of positives flagged, ≤ 5 % of negatives flagged at error level).

    pip download --no-deps --no-binary :all: gixy-ng==0.2.59 && tar xzf gixy_ng-0.2.59.tar.gz
    python -m bench.gixy_cases gixy_ng-0.2.59/tests/plugins/simply [--all] [--gixy PATH] [-v]

The cases are not in this repository (they are gixy-ng's, MPL-2.0, and CI has no network);
tests/nginxgen/test_security.py holds our own equivalents.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nginxgen.lint import RULES, lint

# The classes issue #12 asks for (gixy-ng's high-severity ones plus their close relatives).
CLASSES = (
    "alias_traversal",
    "http_splitting",
    "ssrf",
    "allow_without_deny",
    "return_bypasses_allow_deny",
    "valid_referers",
    "origins",
    "host_spoofing",
    "add_header_multiline",
    "unanchored_regex",
    "regex_redos",
)


def covering(check: str) -> set[str]:
    return {r.id for r in RULES.values() if check in r.gixy or check in r.replaces}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", type=Path, help="gixy-ng's tests/plugins/simply directory")
    p.add_argument("--all", action="store_true", help="every gixy check, not just #12's")
    p.add_argument("--gixy", help="also merge gixy-ng's own findings (its executable)")
    p.add_argument("-v", "--verbose", action="store_true", help="list misses and false alarms")
    ns = p.parse_args(argv)
    checks = sorted(d.name for d in ns.cases.iterdir() if d.is_dir())
    if not ns.all:
        checks = [c for c in checks if c in CLASSES]
    totals = {"pos": 0, "pos_hit": 0, "neg": 0, "neg_err": 0, "neg_any_err": 0}
    print(f"{'gixy check':30} {'positives':>12} {'negatives (error)':>18} {'any error':>10}")
    for check in checks:
        ids = covering(check)
        gx = f"GX:{check}"
        row = {"pos": 0, "pos_hit": 0, "neg": 0, "neg_err": 0, "neg_any_err": 0}
        for case in sorted((ns.cases / check).glob("*.conf")):
            findings = lint(case, gixy=ns.gixy).findings
            ours = [f for f in findings if f.rule in ids or f.rule == gx]
            if case.name.endswith("_fp.conf"):
                row["neg"] += 1
                bad = [f for f in ours if f.severity == "error"]
                row["neg_err"] += bool(bad)
                row["neg_any_err"] += any(f.severity == "error" for f in findings)
                if bad and ns.verbose:
                    print(f"    false alarm {case.name}: {bad[0].rule} {bad[0].message}")
            else:
                row["pos"] += 1
                row["pos_hit"] += bool(ours)
                if not ours and ns.verbose:
                    print(f"    missed {case.name}")
        for k in totals:
            totals[k] += row[k]
        print(
            f"{check:30} {row['pos_hit']:>5}/{row['pos']:<6} {row['neg_err']:>9}/{row['neg']:<8}"
            f" {row['neg_any_err']:>5}/{row['neg']}"
        )
    pos = totals["pos_hit"] / max(totals["pos"], 1)
    neg = totals["neg_err"] / max(totals["neg"], 1)
    neg_any = totals["neg_any_err"] / max(totals["neg"], 1)
    print(
        f"{'total':30} {totals['pos_hit']:>5}/{totals['pos']:<6} {totals['neg_err']:>9}/"
        f"{totals['neg']:<8} {totals['neg_any_err']:>5}/{totals['neg']}"
    )
    print(
        f"positives flagged: {pos:.0%}; negatives flagged at error level by the class's rule: "
        f"{neg:.0%}; negatives with any error-level finding: {neg_any:.0%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
