"""rise-pipeline: the importable library (no click, no DVC).

Stage one (`extract`) shards a multi-domain image dataset and runs the CLIP teacher once into an HDF5
store; stage two (`distill`) trains students from that store. See README.md and docs/.
"""

__version__ = "0.1.0"
