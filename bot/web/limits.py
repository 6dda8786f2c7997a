"""Limits the bot's HTTP servers share (the web pages' and the metrics')."""

# aiohttp's keep-alive time, which also bounds how long a request's head may take to arrive
# (its default is an hour: a client sending a header a minute would hold a socket that long).
REQUEST_HEAD_TIMEOUT_S = 15.0
