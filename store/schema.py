"""Tables of the history database (SQLAlchemy 2 ORM on SQLite).

- ``sessions``: one row per gonio process that committed steps (when, where,
  which gonio version).
- ``steps``: one row per command that succeeded. ``id`` is the step number
  users see ("step 7"): unique and increasing in the database (SQLite
  AUTOINCREMENT never reuses a number). ``parent_id`` is NULL for a step made
  from the empty start state ("step 0"). ``manifest`` maps every artifact name
  of the state *after* the step to its blob hash. A row is never changed once
  written, except its ``status`` ("ok", or "damaged" as marked by ``gonio
  repair``); rows are deleted only by an explicit ``forget`` of a branch.
- ``kv``: small key-value pairs: ``head`` (the current step, "" = step 0),
  ``redo:<step>`` (the child that ``redo`` returns to from ``<step>``),
  ``damage:<step>`` (why repair marked a step damaged) and ``generation``
  (raised when steps are forgotten or re-marked, so that every process
  re-reads the tree).

The database file is marked with SQLite's ``application_id`` and its schema
version is SQLite's ``user_version``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: SQLite ``application_id`` of a gonio history ("goni" in ASCII).
APPLICATION_ID = 0x676F6E69
#: Version of the tables below; raise it (and add a migration) when they change.
SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class SessionRow(Base):
    """A gonio process that committed steps to this history."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime)  # UTC
    folder: Mapped[str] = mapped_column(Text)
    software_version: Mapped[str] = mapped_column(String(64))


class StepRow(Base):
    """One successful command and the complete state after it."""

    __tablename__ = "steps"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("steps.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    command: Mapped[str] = mapped_column(String(64))
    line: Mapped[str] = mapped_column(Text)
    params: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    started: Mapped[datetime] = mapped_column(DateTime)  # UTC
    finished: Mapped[datetime] = mapped_column(DateTime)  # UTC
    duration_s: Mapped[float] = mapped_column(Float)
    software_version: Mapped[str] = mapped_column(String(64))
    log: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict] = mapped_column(JSON)
    manifest: Mapped[dict] = mapped_column(JSON)


class KeyValueRow(Base):
    """A named value: the session head and the per-step redo targets."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
