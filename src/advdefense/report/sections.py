"""The report's sanity-check and sparse-attack (pixel budget) sections."""

from __future__ import annotations

from typing import Any

from advdefense.report.common import DASH, fmt, md_table


def sanity_section(checks: list[dict[str, Any]]) -> list[str]:
    failed = [c for c in checks if not c["passed"]]
    out = [f"{len(checks) - len(failed)} of {len(checks)} checks passed.", ""]
    if failed:
        out += ["**Failed (the affected rows carry the flag and ⚠):**", ""]
        out += md_table(["check", "model", "threat", "attack", "detail"],
                         [[c["check"], f"`{c['model']}`", c["threat"], c["attack"], c["detail"]]
                          for c in failed]) + [""]
    passed = sorted({c["check"] for c in checks if c["passed"]})
    if passed:
        out += ["Checks with passing instances: " + ", ".join(f"`{p}`" for p in passed), ""]
    return out


def l0_section(curves: list[dict[str, Any]]) -> list[str]:
    """Sparse attacks by pixel budget: accuracy counting only successes within k pixels."""
    from advdefense.evaluation.l0_curves import BUDGETS, accuracy_at, median_l0

    if not curves:
        return []
    body = []
    for c in sorted(curves, key=lambda c: (c["attack"], c["model"], c["threat"])):
        med = median_l0(c)
        body.append([f"`{c['model']}`", c["attack"], c["threat"], str(c["n"]),
                     *(fmt(accuracy_at(c, k)) for k in BUDGETS), fmt(accuracy_at(c, None)),
                     DASH if med is None else f"{med:.0f}"])
    return ["## Sparse attacks by pixel budget", "",
            "Accuracy when a success counts only if the attack changed at most k of the 784 "
            "pixels; `any` is the row's accuracy. The local search has no pixel budget, so its "
            "`any` column includes images changed enough to be another digit; JSMA and sparse "
            "PGD stop at 78 pixels. Each column is what this attack's own search found within k "
            "pixels (an upper bound on robust accuracy at k, not a certificate); an attack that "
            "spends its whole budget on every image (sparse PGD: every success changes k = 78 "
            "pixels) says nothing about smaller budgets.", "",
            *md_table(["model", "attack", "threat", "n", *(f"k={k}" for k in BUDGETS), "any",
                        "median pixels per success"], body), ""]
