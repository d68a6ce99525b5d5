"""The job explorer (`gpumesh explorer`): a read-only view of one deployment, from the chain and IPFS.

- `index`   pure: folds decoded contract events into facts about jobs, workers, watchtowers, games
- `games`   pure: a dispute game's moves (side, gas, clock) and its bisection path, unit to element
- `reader`  the data layer: chain views, events (gpumesh.client.chain) and IPFS reads -> JSON dicts
- `api`     the read endpoints as one dispatch, shared by the HTTP server and `gpumesh explorer show`
- `server`  the HTTP layer (Python's http.server, server-sent events) and the static page in static/

Imported by the CLI only; imports the chain and IPFS adapters, never the node daemons.
"""
