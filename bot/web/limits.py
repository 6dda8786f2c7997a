"""Limits the bot's HTTP servers share (the web pages' and the metrics')."""

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

# Addresses or networks (EASEL_WEB_TRUSTED_PROXIES) whose connections are a reverse proxy's.
ProxyNetworks = tuple[IPv4Network | IPv6Network, ...]

# aiohttp's keep-alive time, which also bounds how long a request's head may take to arrive
# (its default is an hour: a client sending a header a minute would hold a socket that long).
REQUEST_HEAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class ConnectionCaps:
    per_client: int  # open connections one client (bot.web.connections.client_of) may hold
    total: int  # open connections the server holds, all clients together
    # Whether a loopback peer is held to ``per_client`` (always to ``total``): off where a
    # reverse proxy on this machine is the documented set-up, since every connection then
    # comes from it.
    cap_loopback_clients: bool = True
    # Peers held to ``total`` alone, like an exempt loopback: reverse proxies on other hosts or
    # containers (a compose network's gateway), whose every connection comes from them.
    trusted_proxies: ProxyNetworks = ()


# Connections one server holds at once (bot.web.connections), constants rather than settings:
# the pages see a few members at a time and one direct client cannot take the server's whole
# total. Loopback is exempt from the per-client cap: it is the reverse proxy of the default
# set-up, which over HTTP/2 opens one upstream connection per request in flight (a dashboard
# page loads 24 thumbnails at once), so a few admins together would pass 64; each real client
# is the proxy's to cap. The two totals (576) stay well under the common 1024 open files a
# process may have, with Discord's and the database's.
WEB_CONNECTION_CAPS = ConnectionCaps(per_client=64, total=512, cap_loopback_clients=False)
# Prometheus and a health check each use one connection at a time; no proxy stands in front.
METRICS_CONNECTION_CAPS = ConnectionCaps(per_client=16, total=64)
