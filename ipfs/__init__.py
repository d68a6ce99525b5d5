"""gpumesh.ipfs: UnixFS importer, the Kubo RPC client adapter, the embedded Kubo-RPC node."""
