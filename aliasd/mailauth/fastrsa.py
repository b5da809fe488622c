"""RSA for dkimpy through OpenSSL (``cryptography``). dkimpy signs and verifies with
Python's own big-integer ``pow``: about 8 ms per 2048-bit signature and 0.3 ms per
verification here, and an ARC seal makes two signatures. PKCS#1 v1.5 signatures are
deterministic, so OpenSSL's are byte-for-byte the ones dkimpy would make, and a
signature OpenSSL accepts is one dkimpy's check accepts; only the time changes. dkimpy
also parses the private key's PEM (in Python) on every seal: the parsed key is kept.
Installed once, on import."""

from __future__ import annotations

import functools

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_pure_python_sign = dkim.RSASSA_PKCS1_v1_5_sign
_pure_python_verify = dkim.RSASSA_PKCS1_v1_5_verify
_parse_pem_private_key = dkim.parse_pem_private_key


@functools.lru_cache(maxsize=64)
def _key(n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int, iqmp: int):
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public).private_key()


@functools.lru_cache(maxsize=1024)
def _public_key(n: int, e: int):
    return rsa.RSAPublicNumbers(e, n).public_key()


def openssl_sign(hash_obj, private_key: dict) -> bytes:
    algorithm = _HASHES.get(getattr(hash_obj, "name", ""))
    if algorithm is None:
        return _pure_python_sign(hash_obj, private_key)
    pk = private_key
    key = _key(pk["modulus"], pk["publicExponent"], pk["privateExponent"], pk["prime1"],
               pk["prime2"], pk["exponent1"], pk["exponent2"], pk["coefficient"])  # fmt: skip
    return key.sign(hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))


def openssl_verify(hash_obj, signature: bytes, public_key: dict) -> bool:
    algorithm = _HASHES.get(getattr(hash_obj, "name", ""))
    n, e = public_key.get("modulus"), public_key.get("publicExponent")
    if algorithm is None or not isinstance(n, int) or not isinstance(e, int):
        return _pure_python_verify(hash_obj, signature, public_key)
    try:
        key = _public_key(n, e)
    except ValueError:  # a key OpenSSL refuses (even exponent, tiny modulus): dkimpy's way
        return _pure_python_verify(hash_obj, signature, public_key)
    size = (n.bit_length() + 7) // 8
    if len(signature) < size:  # leading zero bytes dropped: dkimpy's integer check accepts it
        signature = bytes(size - len(signature)) + signature
    try:
        key.verify(signature, hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))
    except (InvalidSignature, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=64)
def cached_private_key(data: bytes) -> dict:
    """dkimpy's parsed form of a PEM key (not changed by its callers), parsed once."""
    return _parse_pem_private_key(data)


SHIPPED = [  # (owner, attribute, dkimpy's own, ours)
    (dkim, "RSASSA_PKCS1_v1_5_sign", _pure_python_sign, openssl_sign),
    (dkim, "RSASSA_PKCS1_v1_5_verify", _pure_python_verify, openssl_verify),
    (dkim, "parse_pem_private_key", _parse_pem_private_key, cached_private_key),
]
for _owner, _attribute, _theirs, _ours in SHIPPED:
    setattr(_owner, _attribute, _ours)
