"""Dispute strategies shared by the worker (defender) and the watchtower (challenger).

Pure decisions: (game snapshot, the player's own data) -> the next action. The daemons turn actions
into transactions. Imports only gpumesh.client.core (no web3, no torch).
"""
