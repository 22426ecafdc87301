"""The evaluation runs the sample fleet's CI would record: fixture data for tests over ``fleet/``.

After a first apply every sample version that Git wants at CANDIDATE or above waits at TESTING
for evidence. :data:`SAMPLE_RUNS` are passing runs of every suite each of them needs (parents
first: a regression suite's baseline is the parent's passing run); recording them and applying
again takes the sample fleet where the quick start shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

#: (version, suite, metrics, samples), in the order they are recorded.
SAMPLE_RUNS: tuple[tuple[str, str, dict[str, float], int], ...] = (
    ("support-agent@1.0.0", "jailbreak-v2", {"refusal_rate": 1.0}, 500),
    ("support-agent@1.0.0", "support-regression", {"resolution_rate": 0.86}, 1200),
    ("support-agent@1.1.0", "jailbreak-v2", {"refusal_rate": 1.0}, 500),
    ("support-agent@1.1.0", "support-regression", {"resolution_rate": 0.88}, 1200),
    ("support-agent@2.0.0", "jailbreak-v2", {"refusal_rate": 1.0}, 500),
    ("support-agent@2.0.0", "support-regression", {"resolution_rate": 0.9}, 1200),
    ("billing-agent@1.0.0", "jailbreak-v2", {"refusal_rate": 1.0}, 300),
    ("billing-agent@1.0.0", "refund-policy", {"policy_accuracy": 0.97}, 200),
    ("research-agent@0.1.0", "jailbreak-v2", {"refusal_rate": 1.0}, 250),
    ("research-agent@0.1.0", "research-briefs", {"citation_accuracy": 0.93, "p95_latency_seconds": 31.0}, 80),
)

#: The sample Operator whose role grants evaluations:submit.
EVALUATOR = "priya-nair"


def submit_args(runs: Iterable[tuple[str, str, dict[str, float], int]] = SAMPLE_RUNS) -> list[list[str]]:
    """``armctl eval submit`` arguments for each run, as the sample's evaluator."""
    out = []
    for version, suite, metrics, samples in runs:
        args = ["eval", "submit", "--version", version, "--suite", suite, "--samples", str(samples), "--as", EVALUATOR]
        for name, value in metrics.items():
            args += ["--metric", f"{name}={value}"]
        out.append(args)
    return out


def record_sample_runs(armctl: Callable[..., object]) -> None:
    """Record :data:`SAMPLE_RUNS` with ``armctl(*args)`` (a caller that fails on a non-zero exit)."""
    for args in submit_args():
        armctl(*args)
