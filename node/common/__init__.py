"""Daemon plumbing shared by the worker and the watchtower: state store, lifecycle, clocks."""
