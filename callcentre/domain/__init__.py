"""The pure domain: IVR flow, call distribution, tickets and service targets.

Nothing here imports asyncio streams, SQLAlchemy or aiohttp; adapters translate.
"""
