"""The application: one module per command plus the click entry point (`stages.cli`).

A command parses its arguments (flags generated from the library's config dataclasses by `stages.options`),
loads its params.yaml section(s), calls one step function of the library (`pipeline`) and prints. Steps
decide what is up to date and write their outputs; commands hold no maths and no config definitions.
Imports point one way: stages -> pipeline.
"""
