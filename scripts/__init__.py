"""Tools that are not an entry point of their own folder: demo, data preparation, reports, benchmarks."""
