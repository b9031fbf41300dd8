"""The ``npcnn`` command-line tool: train, evaluate, predict, summary, gradcheck.

Entry point: :func:`npcnn.cli.main.main` (also ``python -m npcnn``).
"""
