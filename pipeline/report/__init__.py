"""The report: distill run folders -> config selection by source validation -> the paper-style table.

`tables` finds, loads, selects and renders runs (Markdown, CSV, PNG, DVC metrics); `step.run` writes them.
"""
