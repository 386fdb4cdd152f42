"""Where a session lives in its processing folder.

Kept apart from :mod:`gonio.store.history` (which imports SQLAlchemy) so that a
caller can tell whether a folder holds a session without that import.
"""

SESSION_DIR = ".gonio"
DATABASE_NAME = "history.sqlite"
