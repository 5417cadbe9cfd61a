# Copyright (c) mmvfm contributors. All rights reserved.
"""The parts of ``tools/analysis_tools/seed_sweep.py`` (its CLI):
``runner`` trains the runs, ``collect`` reads their values and computes the
statistics, ``report`` writes the table, README block and plot."""
