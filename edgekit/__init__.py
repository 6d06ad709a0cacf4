"""edgekit: take a trained model to an edge device in one measured step."""

__version__ = "0.1.0"

from edgekit.io.interrupts import unblock_if_inherited as _unblock_if_inherited

_unblock_if_inherited()  # a child of an edgekit run takes SIGINT/SIGTERM normally
