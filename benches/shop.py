"""What the benchmark scripts share when they play the shop: shopper tokens
minted as the engine's `token` command mints them (HS256, claims `sub` and
`exp`; spawning the command per token is slow), a live sale created
through the admin API, and a Redis command as `redis-cli --pipe` takes it.
Imported by the scripts' Python (`sys.path` gets `benches/`); nothing here
measures anything."""

import base64
import datetime
import hashlib
import hmac
import json
import time

_HEADER = None


def _b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(secret, i, ttl_secs=3600):
    """Shopper `bench-<i>`'s token, signed with `secret` (bytes)."""
    global _HEADER
    if _HEADER is None:
        _HEADER = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _HEADER + "." + _b64(json.dumps({"sub": f"bench-{i}", "exp": int(time.time()) + ttl_secs}).encode())
    return body + "." + _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())


def new_sale(connection, admin, stock, per_user_limit=1):
    """A sale open for an hour with `stock` units, through `connection` (an
    `http.client.HTTPConnection` to the engine); its order route's path."""
    now = datetime.datetime.now(datetime.timezone.utc)
    at = lambda delta: (now + delta).strftime("%Y-%m-%dT%H:%M:%SZ")
    sale = {"sku": "BENCH", "title": "bench", "price_cents": 100, "stock_total": stock,
            "per_user_limit": per_user_limit, "starts_at": at(datetime.timedelta(seconds=-1)),
            "ends_at": at(datetime.timedelta(hours=1))}
    connection.request("POST", "/admin/v1/sales", json.dumps(sale),
                       {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    answer = connection.getresponse()
    body = answer.read()
    assert answer.status == 201, (answer.status, body)
    return "/api/v1/sales/%s/orders" % json.loads(body)["id"]


def resp_command(*args):
    """The command `args` (each sent as its `str`) in Redis's protocol."""
    words = [str(a).encode() for a in args]
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
