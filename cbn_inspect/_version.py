"""Version of the package and of the JSON report schema (bumped on any rename or removal of a field)."""

__version__ = "0.1.0"
SCHEMA_VERSION = "1.2"
