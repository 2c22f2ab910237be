#!/usr/bin/env python3
"""An independent implementation of protocol/FINGERPRINT.md, used to write the test vectors.

It shares no code with the Swift implementation: the Swift tests check their results against the
vectors this script writes, so two implementations agree byte for byte.

    python3 protocol/fingerprint_reference.py > protocol/vectors/fingerprint.json
"""
import hashlib
import json
import re
import struct
import sys
from datetime import datetime, timezone
from decimal import Decimal


def canonical_decimal(value):
    d = Decimal(value) if not isinstance(value, Decimal) else value
    if not d.is_finite():
        raise ValueError("not finite")
    sign, digits, exponent = d.as_tuple()
    # Exact: scale to 9 places and refuse anything finer.
    scaled = d.scaleb(9)
    if scaled != scaled.to_integral_value():
        raise ValueError("more than 9 decimal places")
    nanos = int(scaled)
    negative = nanos < 0
    nanos = abs(nanos)
    whole, fraction = divmod(nanos, 10**9)
    text = ("-" if negative else "") + str(whole)
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text


TS = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$")


def micros(text):
    m = TS.match(text)
    if not m:
        raise ValueError("bad timestamp " + text)
    y, mo, d, h, mi, s, frac, tz = m.groups()
    frac = (frac or "")
    if len(frac) > 6 and int(frac[6:]) != 0:
        raise ValueError("sub-microsecond")
    us = int((frac + "000000")[:6])
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
    secs = int(dt.timestamp())
    if tz not in ("Z", "z"):
        sign = -1 if tz[0] == "-" else 1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return secs * 1_000_000 + us


def prop_text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, Decimal)):
        return canonical_decimal(v)
    if isinstance(v, str):
        return v
    raise ValueError("bad property value")


def fields(obj, default_metric):
    if "tenant" not in obj and "user_id" in obj:
        props = dict(obj.get("properties") or {})
        if "endpoint" in obj:
            props["endpoint"] = obj["endpoint"]
        return (obj["user_id"], obj.get("metric", default_metric), obj["units"], obj["timestamp"], obj.get("id"), props)
    return (obj["tenant"], obj.get("metric", default_metric), obj["quantity"], obj["timestamp"], obj.get("id"),
            dict(obj.get("properties") or {}))


def s(x):
    b = x.encode("utf-8")
    return struct.pack(">I", len(b)) + b


def canonical(obj, default_metric=None):
    tenant, metric, quantity, ts, ident, props = fields(obj, default_metric)
    out = b"TFP1" + (b"\x01" if ident is not None else b"\x02")
    out += s(tenant) + s(metric) + struct.pack(">q", micros(ts))
    if ident is not None:
        return out + s(ident)
    out += s(canonical_decimal(Decimal(str(quantity)) if not isinstance(quantity, Decimal) else quantity))
    items = sorted(((k, prop_text(v)) for k, v in props.items()), key=lambda kv: kv[0].encode("utf-8"))
    out += struct.pack(">I", len(items))
    for k, v in items:
        out += s(k) + s(v)
    return out


CASES = [
    # name, input JSON text, default metric, same_as group
    ("brief-example", '{"tenant": "acme", "metric": "api_calls", "quantity": 1, "timestamp": "2026-04-13T12:00:00Z", "id": "req-7f3a", "properties": {"endpoint": "/api/v1/search", "region": "eu"}}', None, "acme-req-7f3a"),
    ("brief-example-reordered", '{"id":"req-7f3a","properties":{"region":"eu","endpoint":"/api/v1/search"},"timestamp":"2026-04-13T12:00:00Z","quantity":1,"metric":"api_calls","tenant":"acme"}', None, "acme-req-7f3a"),
    ("brief-example-offset-time", '{"tenant": "acme", "metric": "api_calls", "quantity": 1, "timestamp": "2026-04-13T14:00:00+02:00", "id": "req-7f3a"}', None, "acme-req-7f3a"),
    ("brief-example-other-quantity", '{"tenant": "acme", "metric": "api_calls", "quantity": 5, "timestamp": "2026-04-13T12:00:00.000Z", "id": "req-7f3a"}', None, "acme-req-7f3a"),
    ("seed-shape", '{ "user_id": "123", "endpoint": "/api/v1/search", "units": 1, "timestamp": "2026-04-13T12:00:00Z"}', "api_calls", "seed"),
    ("seed-shape-as-tally", '{"tenant":"123","metric":"api_calls","quantity":"1","timestamp":"2026-04-13T12:00:00Z","properties":{"endpoint":"/api/v1/search"}}', None, "seed"),
    ("no-id-1.0", '{"tenant":"t1","metric":"bytes_out","quantity":1.0,"timestamp":"2026-04-13T12:00:00Z"}', None, "one"),
    ("no-id-string-1", '{"tenant":"t1","metric":"bytes_out","quantity":"1","timestamp":"2026-04-13T12:00:00Z"}', None, "one"),
    ("no-id-1e0", '{"tenant":"t1","metric":"bytes_out","quantity":1e0,"timestamp":"2026-04-13T12:00:00Z"}', None, "one"),
    ("no-id-10E-1-whitespace", ' {\n "tenant" : "t1" ,\t"metric":"bytes_out", "quantity": 10E-1, "timestamp":"2026-04-13T12:00:00Z" }\n', None, "one"),
    ("no-id-quantity-2", '{"tenant":"t1","metric":"bytes_out","quantity":2,"timestamp":"2026-04-13T12:00:00Z"}', None, None),
    ("no-id-other-tenant", '{"tenant":"t2","metric":"bytes_out","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}', None, None),
    ("no-id-other-metric", '{"tenant":"t1","metric":"api_calls","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}', None, None),
    ("no-id-one-microsecond-later", '{"tenant":"t1","metric":"bytes_out","quantity":1,"timestamp":"2026-04-13T12:00:00.000001Z"}', None, None),
    ("no-id-with-property", '{"tenant":"t1","metric":"bytes_out","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"region":"eu"}}', None, None),
    ("with-id-x", '{"tenant":"t1","metric":"bytes_out","quantity":1,"timestamp":"2026-04-13T12:00:00Z","id":"x"}', None, None),
    ("length-prefix-ab-c", '{"tenant":"ab","metric":"c","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}', None, None),
    ("length-prefix-a-bc", '{"tenant":"a","metric":"bc","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}', None, None),
    ("fractional-quantity", '{"tenant":"t1","metric":"compute_ms","quantity":12.345000,"timestamp":"2026-04-13T12:00:00.123456Z"}', None, "frac"),
    ("fractional-quantity-exp", '{"tenant":"t1","metric":"compute_ms","quantity":1.2345e1,"timestamp":"2026-04-13T12:00:00.123456000Z"}', None, "frac"),
    ("property-number-vs-string-a", '{"tenant":"t1","metric":"api_calls","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"status":200,"ok":true}}', None, "status"),
    ("property-number-vs-string-b", '{"tenant":"t1","metric":"api_calls","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"ok":"true","status":"200"}}', None, "status"),
    ("unicode-tenant-escaped", '{"tenant":"caf\\u00e9 \\ud83d\\ude00","metric":"api_calls","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}', None, "unicode"),
    ("unicode-tenant-raw", '{"tenant":"café 😀","metric":"api_calls","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}', None, "unicode"),
    ("zero-quantity", '{"tenant":"t1","metric":"api_calls","quantity":0.000,"timestamp":"2026-04-13T12:00:00Z"}', None, None),
    ("large-quantity", '{"tenant":"t1","metric":"bytes_out","quantity":999999999999999.999999999,"timestamp":"2026-04-13T12:00:00Z"}', None, None),
    ("pre-epoch", '{"tenant":"t1","metric":"api_calls","quantity":1,"timestamp":"1969-12-31T23:59:59.5Z"}', None, None),
]


def main():
    vectors = []
    for name, text, default_metric, same_as in CASES:
        obj = json.loads(text, parse_float=Decimal, parse_int=Decimal)
        c = canonical(obj, default_metric)
        vectors.append({
            "name": name,
            "input": text,
            "default_metric": default_metric,
            "same_as": same_as,
            "canonical_hex": c.hex(),
            "fingerprint": hashlib.sha256(c).digest()[:16].hex(),
        })
    json.dump(vectors, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
