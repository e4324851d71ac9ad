"""Persistence: SQLAlchemy 2 async models, repositories and Alembic migrations.

``db`` builds engines and runs migrations, ``models`` holds the tables, ``repo`` implements the
domain's Directory and TicketStore ports.
"""
