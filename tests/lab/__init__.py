"""Capture lab: network namespaces, an Exchange-Online-like SMTP server, real clients, a DNS
responder and a table of scenarios that record real SMTP/TLS sessions into pcap files.

Used by ``scripts/record-captures`` (the bundled ``captures/``) and by tests that need live
traffic. Everything runs inside namespaces this package creates (client — router — server);
nothing is ever sent to any other address.
"""
