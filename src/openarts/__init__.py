"""openarts: a self-hosted training-job service speaking the ModelArts Training v2 API."""

__version__ = "0.1.0"
