"""Imports every command module so that its commands register on the app."""

from __future__ import annotations

import importlib

COMMANDS = ("start", "worker", "init", "predict", "doctor", "prelabel", "settings_cmd")

for _name in COMMANDS:
    try:
        importlib.import_module(f"labelbridge.cli.{_name}")
    except ModuleNotFoundError as exc:  # a command not written yet; a missing dependency is raised
        if exc.name != f"labelbridge.cli.{_name}":
            raise
