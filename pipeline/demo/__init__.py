"""The embedded default: a seeded multi-domain demo world and a small CLIP teacher pretrained on it.

Nothing in `extract` or `distill` depends on this package except `models`, which registers the project's
tiny open_clip configs (`RISE-tiny-RN`, ...) so that they load by name like any open_clip model.
"""
