"""Example loyalty programs shipped with the package (``retail.yaml`` runs the demo)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def retail_program_path() -> Path:
    """Where the example retail program's YAML file is installed."""
    return Path(str(files(__package__).joinpath("retail.yaml")))
