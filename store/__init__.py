"""gonio.store: persistence of the processing history (SQLite) and artifacts.

- :mod:`gonio.store.history`: :class:`History`, the tree of steps of one
  processing folder (commit, undo, redo, goto, branches), shared by all gonio
  processes working on that folder and safe against a killed process.
- :mod:`gonio.store.blobs`: :class:`BlobStore`, artifacts as content-addressed
  files (SHA-256, Zstandard-compressed when it pays) with an in-memory cache.
- :mod:`gonio.store.maintenance`: check, repair, gc, sizes and copy of a
  session folder.
- :mod:`gonio.store.schema`: the database tables (SQLAlchemy ORM).
- :mod:`gonio.store.errors`: the user-facing errors.
- :mod:`gonio.store.layout`: where a session lives in its folder.

The store deals in bytes; what an artifact means is up to its callers.
"""
