"""Benchmarks: `python -m bench.<part>` writes bench/results/<part>.md; bench.assemble joins."""
