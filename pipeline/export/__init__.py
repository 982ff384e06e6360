"""The distilled student as a deliverable: a run's student folded into a plain timm model folder (`fold`,
`timm_folder`), and scoring images with a run folder or an exported folder (`models`, `predict`, `evaluate`).

A model to score with is either a run folder (scored exactly as distill scored it: the run's eval transform,
the text ensemble when the run used it, the sum of a rise-mix run's students) or an exported folder (scored
with timm's own eval transform and model, as any user of the export would)."""
