"""The embedded default: a seeded multi-domain demo world and a small CLIP teacher pretrained on it.

Nothing in `extract` or `distill` depends on this package; its teacher pretraining takes the project's tiny
open_clip configs (`RISE-tiny-RN`, ...) from `extract.project_models`, where teachers are loaded.
"""
