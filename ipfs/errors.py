"""Errors of the IPFS layer (gpumesh.ipfs): one base, `IpfsError`, and one subclass per failure.

Anything in gpumesh may import this module; it depends only on the pure core's error base.
"""

from __future__ import annotations

from gpumesh.client.core.errors import GpumeshError


class IpfsError(GpumeshError):
    """Base of every expected failure of the IPFS layer (store, importer, embedded node)."""

    exit_code = 6


class IpfsUnreachable(IpfsError):
    """The Kubo RPC API cannot be reached (connection refused, bad address, DNS)."""


class IpfsTimeout(IpfsError):
    """The Kubo RPC API did not answer in time (after the configured retries)."""


class IpfsApiError(IpfsError):
    """The daemon answered with an error (Kubo's {"Message", "Code", "Type": "error"})."""


class InvalidCid(IpfsError):
    """A string or byte sequence is not a CID this layer can verify (sha2-256, dag-pb/raw)."""


class CidMismatch(IpfsError):
    """Data does not hash to the CID it was served or stored under: never trusted, never returned."""


class NotFound(IpfsError):
    """A block or path is not in the store (and the store could not fetch it)."""


class CorruptBlock(IpfsError):
    """A block on disk no longer matches its CID (bit rot, torn write): reported, never served."""


class MalformedDag(IpfsError):
    """A block hashes correctly but is not a valid dag-pb / UnixFS node, or its sizes disagree."""


class Unsupported(IpfsError):
    """A valid IPFS object that this layer deliberately does not handle (e.g. HAMT directories)."""
