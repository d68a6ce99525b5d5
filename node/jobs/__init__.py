"""A job's off-chain data, shared by the worker, the watchtower and the poster CLI: fetch and
validate it against the chain (fetch), publish it (publish), and the outputs file (outputs).
May import gpumesh.client.core, gpumesh.ipfs and gpumesh.node.runtime; never web3."""
