"""A test plug-in report section: the run's request count under its own heading."""

from __future__ import annotations

from html import escape

from cachestorm.reports.html import fmt

HEADING = "Requests (plug-in section)"


def requests_section(analysis: dict) -> str:
    requests = (analysis.get("headline") or {}).get("requests")
    return f"<h2>{escape(HEADING)}</h2><p class=\"note\">{escape(fmt(requests))} requests</p>"
