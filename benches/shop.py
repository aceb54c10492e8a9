"""What the benchmark scripts share when they play the shop: shopper tokens
minted as the engine's `token` command mints them (HS256, claims `sub` and
`exp`; spawning the command per token is slow), a live sale created
through the admin API, a Redis command as `redis-cli --pipe` takes it, and
a script's body as the engine sends it. Imported by the scripts' Python
(`sys.path` gets `benches/`); nothing here measures anything."""

import base64
import datetime
import hashlib
import hmac
import json
import re
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


def _identifiers(text):
    """The identifiers in `text` as `store::scripts::identifiers` reads
    them: ASCII letters, digits and `_`, not starting with a digit."""
    return [w for w in re.split(r"[^A-Za-z0-9_]", text) if w and not w[0].isdigit()]


def script_body(lua_dir, script_name, whole=False):
    """`lua/<script_name>.lua` with the helpers of `lua/common.lua` it
    names, and theirs, in common.lua's order: the body
    `store::scripts::with_helpers` builds, by the same rule (a definition
    is a line starting with `local `, with the comment lines right above
    it). `whole`: all of common.lua, as the engine sent every script before
    that rule."""
    with open(f"{lua_dir}/common.lua", newline="") as f:
        common = f.read()
    with open(f"{lua_dir}/{script_name}.lua", newline="") as f:
        script = f.read()
    if whole:
        return common + script
    lines = common.split("\n")
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    starts = []
    for i, line in enumerate(lines):
        if line.startswith("local "):
            rest = line[len("local "):]
            rest = rest[len("function "):] if rest.startswith("function ") else rest
            first = i
            while first > 0 and lines[first - 1].startswith("--"):
                first -= 1
            starts.append((first, next(iter(_identifiers(rest)), "")))
    ends = [first for first, _ in starts[1:]] + [len(lines)]
    definitions = [(name, "".join(lines[first:end])) for (first, name), end in zip(starts, ends)]
    named = set(_identifiers(script))
    kept = []
    for name, text in reversed(definitions):
        if name in named:
            kept.append(text)
            named |= set(_identifiers(text))
    return "".join(reversed(kept)) + script
