"""Lifeboat: move a self-hosted social app between hosts, verified and resumable.

The package is provider-agnostic: the stack model, the provider contract, connections, pure command
builders, the planner, the engine and its output. Provider adapters live in the top-level ``providers``
package and are resolved lazily by :mod:`toolkit.registry`.
"""

__version__ = "0.1.0"
ENVELOPE_VERSION = 1
