"""Stage two, `distill`: students trained from the teacher store, never from the teacher.

  config (DistillConfig: one run's options) -> data (the store's rows, images replayed from the shards)
  -> students (timm backbone + projector + text-initialised classifier) -> losses (CE, KD, AD, RD)
  -> trainer (epochs, evaluation, selection) with checkpoints (resume) = the step (`step.run`).
"""
