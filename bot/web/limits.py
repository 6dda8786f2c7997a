"""Limits the bot's HTTP servers share (the web pages' and the metrics')."""

from dataclasses import dataclass

# aiohttp's keep-alive time, which also bounds how long a request's head may take to arrive
# (its default is an hour: a client sending a header a minute would hold a socket that long).
REQUEST_HEAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class ConnectionCaps:
    per_client: int  # open connections one client (bot.web.connections.client_of) may hold
    total: int  # open connections the server holds, all clients together


# Connections one server holds at once (bot.web.connections), constants rather than settings:
# the pages see a few members at a time, and a reverse proxy (every connection then comes from
# its address) opens one per request in flight, which lasts milliseconds here, so 64 leaves it
# room while one direct client cannot take the server's whole total. The two totals (576) stay
# well under the common 1024 open files a process may have, with Discord's and the database's.
WEB_CONNECTION_CAPS = ConnectionCaps(per_client=64, total=512)
# Prometheus and a health check each use one connection at a time.
METRICS_CONNECTION_CAPS = ConnectionCaps(per_client=16, total=64)
