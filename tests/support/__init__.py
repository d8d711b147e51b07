"""Reusable starters for the real services tests run against (Azurite, the Batch emulator)."""
