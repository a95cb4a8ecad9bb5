"""The keeper's page (issue #17): a small web page served by the gateway itself.

The reservoir keeper and the technician reach it on a phone over the gateway's Wi-Fi or
LAN, with the uplink down and no internet: no CDN, no web fonts, nothing fetched at view
time. ``port`` defines what the page needs from the daemon, ``config`` the ``web:``
section, ``app`` the aiohttp application. Importing this package loads neither aiohttp
nor the pages: the daemon imports ``edge.web.app`` only when ``web:`` is configured, so a
gateway without the page pays nothing for it (docs/web.md has the figures).
"""
