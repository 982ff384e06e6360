"""The report: distill run folders -> config selection by source validation -> the paper-style table.

`runs` finds and reads run folders, `selection` picks each cell's config (training-domain validation),
`statistics` aggregates mean ± std over seeds and pairs each method with the baseline (`verdicts`: the
paired t-test's rule), `render` writes results.md / results.csv / metrics.json / epochs.csv and `figure`
results.png; `step.run` writes them all.
"""
