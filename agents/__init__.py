"""Stream wiring only: each module registers one agent on the app and calls
pure code under ``app/``."""
