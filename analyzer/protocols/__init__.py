"""Protocol layer: sans-I/O parsers (bytes in, events out) for SMTP, TLS and DNS.

Nothing here reads packets or sockets. :mod:`.session` attaches to a TCP connection from
:mod:`analyzer.flows`, decides by content what the connection speaks, and switches from
SMTP to TLS on STARTTLS, the way Zeek and Wireshark do.
"""
