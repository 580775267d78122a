"""A TLS client context that presents an X.509-SVID, with its key kept off the disk.

Python's `ssl` loads a client certificate and key only from paths. The key goes
through an anonymous memory file (`memfd_create`: RAM only, no name in any file
system, closed the moment OpenSSL has read it), the way google-auth itself hands
in-memory mTLS keys to `ssl` (`google.auth.transport._mtls_helper._memfd_cert_key_paths`).
The server is verified against the default trust store (`SSL_CERT_FILE` honoured, as
OpenSSL does), so only the client side differs from any HTTPS call.
"""

from __future__ import annotations

import os
import ssl

from bridge.x509_svid import X509Svid


def client_context(svid: X509Svid) -> ssl.SSLContext:
    """An SSLContext verifying servers as usual and presenting `svid` (leaf + chain)."""
    context = ssl.create_default_context()
    fds: list[int] = []
    try:
        paths = []
        for name, data in (("svid", svid.chain_pem()), ("svid_key", svid.key_pem())):
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, data)
            paths.append(f"/proc/self/fd/{fd}")
        context.load_cert_chain(certfile=paths[0], keyfile=paths[1])
    finally:
        for fd in fds:
            os.close(fd)
    return context
