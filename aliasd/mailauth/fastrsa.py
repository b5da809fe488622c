"""RSA signing for dkimpy through OpenSSL (``cryptography``). dkimpy signs with Python's
own big-integer ``pow``: about 8 ms per 2048-bit signature here, and an ARC seal makes
two. PKCS#1 v1.5 signatures are deterministic, so OpenSSL's are byte-for-byte the ones
dkimpy would make; only the time changes. Installed once, on import."""

from __future__ import annotations

import functools

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_pure_python_sign = dkim.RSASSA_PKCS1_v1_5_sign


@functools.lru_cache(maxsize=64)
def _key(n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int, iqmp: int):
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public).private_key()


def openssl_sign(hash_obj, private_key: dict) -> bytes:
    algorithm = _HASHES.get(getattr(hash_obj, "name", ""))
    if algorithm is None:
        return _pure_python_sign(hash_obj, private_key)
    pk = private_key
    key = _key(pk["modulus"], pk["publicExponent"], pk["privateExponent"], pk["prime1"],
               pk["prime2"], pk["exponent1"], pk["exponent2"], pk["coefficient"])  # fmt: skip
    return key.sign(hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))


dkim.RSASSA_PKCS1_v1_5_sign = openssl_sign
