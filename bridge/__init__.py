"""spiffe-bridge: SPIFFE JWT-SVIDs in, fresh AWS and GCP credentials out."""

__version__ = "0.1.0"
__all__ = ["__version__"]
