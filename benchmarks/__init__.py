"""Side-by-side benchmarks against peer libraries (not part of ``make test``)."""
