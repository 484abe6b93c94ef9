"""`make bench`: every benchmark in turn, a table each, JSON in bench/results/.

Run: `python -m bench.run [--quick] [--only parity overhead tta peers alloc channels_last
compile]` (`compile` is not in the default set: its cold starts take minutes). Timings on a
shared machine are noisy: compare ratios taken in one run (the suites alternate A B A B).
"""

from __future__ import annotations

import argparse

from bench import alloc_ab, channels_last, compile, overhead, parity, peers, tta

SUITES = ["parity", "overhead", "tta", "peers", "alloc", "channels_last", "compile"]
DEFAULT_SUITES = [suite for suite in SUITES if suite != "compile"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Fewer steps and repeats (smoke).")
    parser.add_argument("--only", nargs="*", choices=SUITES, default=DEFAULT_SUITES)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run.")
    args = parser.parse_args(argv)
    threads = ["--threads", str(args.threads)] if args.threads else []
    repeats = ["--repeats", "1" if args.quick else "2"]
    if "parity" in args.only:
        print("\n== parity: scaletrain vs a hand-written loop (median step, A B A B) ==")
        parity.main([*(["--quick"] if args.quick else []), *repeats, *threads])
        print("\n== parity with the default guard (a finite check of loss and norm per step) ==")
        guarded = ["--workloads", "digits-cnn", "--precisions", "32", "--guard", "skip"]
        parity.main([*(["--quick"] if args.quick else []), *repeats, *threads, *guarded])
    if "overhead" in args.only:
        print("\n== per-step overhead, interleaved with raw steps in one process ==")
        overhead.main([*repeats, *threads, "--steps", "300" if args.quick else "1500"])
    if "tta" in args.only:
        print("\n== time to 98 % test accuracy, digits CNN ==")
        tta.main(repeats)
    if "peers" in args.only:
        print("\n== peers on workload (a): samples/s ==")
        peers.main([*repeats, *threads, "--steps", "40" if args.quick else "120"])
    if "alloc" in args.only:
        print("\n== malloc: glibc defaults vs scaletrain's start-up tuning (workload a) ==")
        alloc_ab.main([*repeats, *threads, "--steps", "40" if args.quick else "150"])
    if "channels_last" in args.only:
        print("\n== channels_last vs the default memory format, CNN ==")
        channels_last.main([*repeats, "--steps", "20" if args.quick else "60"])
    if "compile" in args.only:
        print("\n== torch.compile (regional) vs eager: cold start and steady step ==")
        compile.main([*(["--quick"] if args.quick else []), *repeats])


if __name__ == "__main__":
    main()
