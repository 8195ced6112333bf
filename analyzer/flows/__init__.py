"""Flow layer: the TCP connection table, Zeek-compatible connection state, stream reassembly.

Fed decoded packets (:mod:`analyzer.decode`), it hands reassembled bytes to stream
analyzers supplied from above (:mod:`analyzer.protocols`) and finished connections to a
callback. It knows nothing about SMTP or TLS.
"""

from .reassembly import Reassembler, seq_delta
from .table import ConnectionTable, session_uid
from .tcp import StreamAnalyzer, TcpConnection

__all__ = ["ConnectionTable", "Reassembler", "StreamAnalyzer", "TcpConnection", "seq_delta", "session_uid"]
