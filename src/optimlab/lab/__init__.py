"""The lab: train the lecture's optimizers and schedules on real problems and check its claims.

``optimlab lab --quick`` runs a small study (about a minute and a half on two
cores) and writes ``optimlab-lab/report.html``; see ``optimlab lab --help``.
"""
