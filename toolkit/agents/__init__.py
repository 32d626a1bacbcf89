"""Stdlib-only programs Lifeboat ships to the hosts (and runs here): the process supervisor, the media
gateway, the batch writer. They import nothing of Lifeboat's."""

from pathlib import Path

AGENTS = Path(__file__).resolve().parent  # stdlib-only programs shipped to the hosts
SUPERVISOR_SOURCE = AGENTS / "supervisor.py"
