"""The ``socle`` command."""
