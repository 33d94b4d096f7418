"""Curation: from a results file to numbers you can trust and a curated dataset.

``results`` reads and validates results files, ``stats`` computes the statistics, ``report``
is ``ibt report`` and ``select`` is ``ibt select``.
"""
