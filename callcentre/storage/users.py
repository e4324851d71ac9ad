"""Desk users (agents, supervisors, administrators) and the agents' state history.

On the same declarative ``Base`` as :mod:`callcentre.storage.models`, so one Alembic history
(``0002_users``) covers them. Passwords are argon2id hashes, never the password itself. An agent's
``interface`` is the Asterisk dial string of their phone; it is validated where users are created
(:func:`callcentre.storage.users_repo.create_user`) so a bad one fails then, not when dialled.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.domain.users import UserRole
from callcentre.storage.models import Base, UtcDateTime

__all__ = ["AgentStateHistory", "User", "UserRole"]  # UserRole lives in the domain; named here for the table's rule


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('agent', 'supervisor', 'admin', 'quality')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Asterisk dial string of the agent's phone, e.g. PJSIP/agent1 or Local/agent1@callcentre-agents.
    interface: Mapped[str | None] = mapped_column(String(128))
    skills: Mapped[str] = mapped_column(String(256), default="")  # comma-separated tokens
    languages: Mapped[str] = mapped_column(String(64), default="")  # comma-separated tokens
    senior: Mapped[bool] = mapped_column(Boolean, default=False)
    # The supervisor's own phone: listen / whisper / barge calls are originated to it.
    supervisor_interface: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AgentStateHistory(Base):
    __tablename__ = "agent_state_history"
    __table_args__ = (Index("ix_agent_state_history_agent_at", "agent_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
