"""The report stage: one self-contained HTML report built from a run directory's stored files.

Usage::

    from polyculture.report import build_report

    build_report("runs/mnist1d")  # -> runs/mnist1d/report.html (+ runs/mnist1d/report_tables/)
"""

from polyculture.report.html import build_report, build_suite_report

__all__ = ["build_report", "build_suite_report"]
