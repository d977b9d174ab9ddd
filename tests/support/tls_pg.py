"""TLS test material (certificates from a throwaway CA, PostgreSQL with ssl=on): the package's
pyproxy.testing, shared with the benchmark."""

from pyproxy.testing.tlsfiles import CertPair, TestCA, give_to_postgres
from pyproxy.testing.tlspg import Certs, made_certs, presented_certificate, ssl_postgres

__all__ = [
    "CertPair",
    "Certs",
    "TestCA",
    "give_to_postgres",
    "made_certs",
    "presented_certificate",
    "ssl_postgres",
]
