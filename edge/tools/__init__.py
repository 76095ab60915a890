"""Batch tools on a bundle: classifying files, benchmarking, checking a machine (``doctor``)."""
