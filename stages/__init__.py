"""The application: one module per pipeline stage plus the click entry point (`stages.cli`).

Stages resolve their config, skip what is up to date, call the library (`pipeline`) and write outputs
atomically. They hold no maths. Imports point one way: stages -> pipeline.
"""
