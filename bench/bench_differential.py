"""Benchmark: the embedded engine against the real OPA engine on 100,000+ inputs, and their speed.

Runs the differential property test's generators (``tests/policy/differential.py``: well-formed
decision inputs as the reconciler builds them, edge ones, malformed ones, gate inputs) on a
seeded random source, asks both engines (regorus, and OPA v1.20's Go engine in process through
``policy.goopa``) at every entry point, and prints the inputs compared and the differences per
entry point and kind of input; then the decisions per second of each engine on the same
well-formed inputs, one thread, for the reconciler's entry point (``unchecked``) and for
``result``. A figure printer, not a test; it needs the real OPA engine (scripts/install-opa-engine).

    python bench/bench_differential.py [--inputs 100000] [--seed 14] [--speed-inputs 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.policy import engines, goopa, inputs
from tests.policy import differential


def compare(count: int, seed: int, embedded: engines.Engine, real: engines.Engine) -> differential.Tally:
    rng = random.Random(seed)
    tally = differential.Tally()
    started = time.perf_counter()
    for n in range(count):
        if rng.random() < 0.2:
            kind, document = differential.gate_input(rng)
            differential.compare_gates(tally, embedded, real, kind, document)
        else:
            kind, document = differential.decision_input(rng)
            if not differential.in_contract(document):
                raise SystemExit(f"input {n} is outside what the entry points take: {document!r}")
            differential.compare_decision(tally, embedded, real, kind, document)
        if (n + 1) % 10_000 == 0:
            print(
                f"  {n + 1:,} inputs, {sum(tally.differences.values())} differences, {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    return tally


def speed(engine: engines.Engine, rule: str, documents: list[dict[str, object]], rounds: int) -> float:
    """Decisions per second of ``engine`` on ``documents``, one thread: the best of ``rounds``."""
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for document in documents:
            engine.evaluate(rule, document)
        best = max(best, len(documents) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--speed-inputs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not goopa.available():
        raise SystemExit(goopa.INSTALL_HINT)
    bundle = differential.bundle()
    embedded, real = engines.EmbeddedEngine(), goopa.GoOpaEngine()
    embedded.load(bundle)
    real.load(bundle)

    print(f"Comparing {args.inputs:,} inputs (seed {args.seed}): embedded regorus against OPA v1.20's Go engine")
    tally = compare(args.inputs, args.seed, embedded, real)
    print(f"\n{'entry point (kind of input)':<58} {'compared':>10} {'differences':>12}")
    for entry in sorted(tally.compared):
        print(f"{entry:<58} {tally.compared[entry]:>10,} {tally.differences.get(entry, 0):>12,}")
    total, different = sum(tally.compared.values()), sum(tally.differences.values())
    print(f"{'all':<58} {total:>10,} {different:>12,}")
    for entry, document, mine, theirs in tally.examples[:5]:
        print(f"\nDIFFERENCE at {entry}\n  input:    {document!r}\n  embedded: {mine!r}\n  real OPA: {theirs!r}")

    rng = random.Random(args.seed + 1)
    documents = [differential.well_formed(rng) for _ in range(args.speed_inputs)]
    print(f"\nDecisions/s, one thread, on the same {len(documents):,} well-formed inputs (best of {args.rounds}):")
    for rule in (inputs.UNCHECKED_RULE, inputs.DECISION_RULE):
        mine, theirs = speed(embedded, rule, documents, args.rounds), speed(real, rule, documents, args.rounds)
        print(f"  {rule:<30} embedded {mine:>8,.0f}/s   real OPA {theirs:>8,.0f}/s   ratio {mine / theirs:.1f}x")
    sys.exit(1 if different else 0)


if __name__ == "__main__":
    main()
