"""Pure core: types, errors, commitments, program format, op reference semantics, game math.

Imports no I/O library (enforced by import-linter); everything above may import it.
"""
