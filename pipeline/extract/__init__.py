"""Stage one, `extract`: a multi-domain image dataset -> WebDataset shards -> the teacher's HDF5 store.

Reader -> mapper -> writer, each small:
  sources (scan a folder or an index) -> probe (hash + full decode) -> manifest (every file's fate)
  -> writer (deterministic shard tars) = the shard step (`shard_step.run`);
  shards -> parts (teacher on the clean image and K replayable views, one part file per shard)
  -> store + teacher report + audit = the embed step (`embed_step.run`).
"""
