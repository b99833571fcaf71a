"""Rendering an evaluation: report.html (page.py), its tables (tables.py: markdown and HTML) and figures
(figures.py: matplotlib, embedded as PNG)."""

from oncodiff.evaluation.report.page import write_report

__all__ = ["write_report"]
