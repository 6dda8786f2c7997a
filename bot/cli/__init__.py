"""The ``easel`` command line and ``easel doctor``."""
