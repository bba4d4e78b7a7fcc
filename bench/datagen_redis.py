"""Redis bench data: >= 1M keys and >= 500 MB of values across the five core types, fast.

The commands are written as RESP into `redis-cli --pipe` (the fastest bulk-load path Redis
has: one pipe, no round trips), generated from numpy arrays. Values are compressible like
real data, not random bytes: slices of a 64 MiB corpus of pseudo-words drawn with a Zipf-like
frequency (text-like entropy; zstd -3 gets about 2-3x), wrapped in JSON-ish records for the
strings. The corpus is much larger than zstd's window, so repeated slices do not make the
data artificially compressible.

Mix (scale 1.0): 950k strings (JSON-ish, 150-750 B), 20k hashes (25 fields x ~120 B),
10k lists (100 x ~60 B), 10k sets (100 members ~20 B), 10k zsets (100 members ~25 B + score);
1% of the strings carry a one-day TTL. `change_fraction` rewrites a fraction of the keys of
every type (strings: a new value; collections: one element added/replaced).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass, field

import numpy as np

MiB = 1 << 20
CORPUS_BYTES = 64 * MiB
BATCH_BYTES = 8 * MiB

# type -> (keys at scale 1.0, elements per key, element bytes (min, max))
MIX = {
    "string": (950_000, 1, (150, 750)),
    "hash": (20_000, 25, (60, 180)),
    "list": (10_000, 100, (30, 90)),
    "set": (10_000, 100, (0, 0)),  # members "member:<n>" (~15-20 B)
    "zset": (10_000, 100, (0, 0)),  # members "player:<n>:<word>" + a float score
}


@dataclass
class RedisData:
    keys: int = 0
    value_bytes: int = 0  # bytes of values/elements/members/fields written (not key names)
    resp_bytes: int = 0  # RESP bytes piped into the server
    seconds: float = 0.0
    by_type: dict = field(default_factory=dict)
    used_memory: int | None = None
    description: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _corpus(rng: np.random.Generator) -> bytes:
    """Pseudo-text: 8000 'words' of 2-11 letters, drawn Zipf-like, space separated."""
    letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
    letter_p = np.linspace(2.0, 0.2, len(letters))
    letter_p /= letter_p.sum()
    lengths = rng.integers(2, 12, size=8000)
    words = [bytes(rng.choice(letters, size=n, p=letter_p)) for n in lengths]
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.05
    p /= p.sum()
    out, total = [], 0
    while total < CORPUS_BYTES:
        picks = rng.choice(len(words), size=1 << 20, p=p)
        chunk = b" ".join(words[i] for i in picks)
        out.append(chunk)
        total += len(chunk)
    return b" ".join(out)[:CORPUS_BYTES]


def _bulk(parts: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class _Pipe:
    """RESP into `redis-cli --pipe`, in batches; checks its summary at the end."""

    def __init__(self, cli_cmd: list[str]):
        self.proc = subprocess.Popen(
            [*cli_cmd, "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.buf: list[bytes] = []
        self.size = 0
        self.total = 0

    def add(self, cmd: bytes) -> None:
        self.buf.append(cmd)
        self.size += len(cmd)
        if self.size >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.proc.stdin.write(b"".join(self.buf))
            self.total += self.size
            self.buf, self.size = [], 0

    def close(self) -> None:
        self.flush()
        self.proc.stdin.close()
        out = self.proc.stdout.read().decode(errors="replace")
        code = self.proc.wait()
        if code != 0 or "errors: 0," not in out:
            raise RuntimeError(f"redis-cli --pipe failed ({code}): {out[-2000:]}")


class Generator:
    def __init__(self, seed: int = 7):
        self.rng = np.random.default_rng(seed)
        self.corpus = _corpus(self.rng)
        self.view = memoryview(self.corpus)

    def _slices(self, lo: int, hi: int, count: int) -> list[bytes]:
        lengths = self.rng.integers(lo, hi + 1, size=count)
        offsets = self.rng.integers(0, CORPUS_BYTES - hi - 1, size=count)
        view = self.view
        return [bytes(view[o : o + n]) for o, n in zip(offsets.tolist(), lengths.tolist(), strict=False)]

    def _string_values(self, ids, stamp: int) -> list[bytes]:
        lo, hi = MIX["string"][2]
        bodies = self._slices(lo - 90, hi - 90, len(ids))
        ages = self.rng.integers(18, 90, size=len(ids)).tolist()
        return [
            b'{"id":%d,"user":"user%d@example.com","age":%d,"ts":%d,"plan":"%s","bio":"%s"}'
            % (i, i % 50_000, a, stamp + i, (b"free", b"pro", b"team")[i % 3], body)
            for i, a, body in zip(ids, ages, bodies, strict=False)
        ]

    def populate(self, cli_cmd: list[str], scale: float = 1.0, log=print) -> RedisData:
        t0 = time.monotonic()
        data = RedisData()
        pipe = _Pipe(cli_cmd)
        stamp = 1_700_000_000
        n_str = int(MIX["string"][0] * scale)
        for start in range(0, n_str, 50_000):
            ids = list(range(start, min(n_str, start + 50_000)))
            values = self._string_values(ids, stamp)
            for i, v in zip(ids, values, strict=False):
                if i % 100 == 99:
                    pipe.add(_bulk([b"SET", b"str:%d" % i, v, b"EX", b"86400"]))
                else:
                    pipe.add(b"*3\r\n$3\r\nSET\r\n$%d\r\nstr:%d\r\n$%d\r\n%s\r\n" % (len(b"str:%d" % i), i, len(v), v))
                data.value_bytes += len(v)
            data.by_type.setdefault("string", {"keys": 0, "value_bytes": 0})
            data.by_type["string"]["keys"] += len(ids)
            data.by_type["string"]["value_bytes"] += sum(map(len, values))
        data.keys += n_str
        log(f"  redis data: {n_str} strings piped ({pipe.total / MiB:.0f} MiB RESP, {time.monotonic() - t0:.1f} s)")
        for kind in ("hash", "list", "set", "zset"):
            count, per, (lo, hi) = MIX[kind]
            count = int(count * scale)
            vb = 0
            for k in range(count):
                key = b"%s:%d" % (kind.encode(), k)
                if kind == "hash":
                    vals = self._slices(lo, hi, per)
                    parts = [b"HSET", key]
                    for j, v in enumerate(vals):
                        parts += [b"field%02d" % j, v]
                    vb += sum(map(len, vals)) + 7 * per
                elif kind == "list":
                    vals = self._slices(lo, hi, per)
                    parts = [b"RPUSH", key, *vals]
                    vb += sum(map(len, vals))
                elif kind == "set":
                    vals = [b"member:%d" % m for m in self.rng.integers(0, 10_000_000, size=per).tolist()]
                    parts = [b"SADD", key, *vals]
                    vb += sum(map(len, vals))
                else:
                    words = self._slices(4, 12, per)
                    scores = self.rng.normal(1000, 300, size=per).round(2).tolist()
                    parts = [b"ZADD", key]
                    for j, (w, s) in enumerate(zip(words, scores, strict=False)):
                        member = b"player:%d:%s" % (j, w)
                        parts += [repr(s).encode(), member]
                        vb += len(member) + 8
                pipe.add(_bulk(parts))
            data.by_type[kind] = {"keys": count, "elements_per_key": per, "value_bytes": vb}
            data.value_bytes += vb
            data.keys += count
        pipe.close()
        data.resp_bytes = pipe.total
        data.seconds = time.monotonic() - t0
        data.description = (
            "RESP piped into redis-cli --pipe; values are slices of a 64 MiB Zipf pseudo-word "
            "corpus (text-like, compressible), strings wrapped in JSON-ish records, 1% with a TTL"
        )
        return data

    def change(self, cli_cmd: list[str], scale: float, fraction: float = 0.01, seed: int = 11) -> dict:
        """Rewrite `fraction` of the keys of each type; returns what was changed."""
        rng = np.random.default_rng(seed)
        pipe = _Pipe(cli_cmd)
        changed = {}
        for kind, (count, _per, (lo, hi)) in MIX.items():
            count = int(count * scale)
            picks = rng.choice(count, size=max(1, int(count * fraction)), replace=False).tolist()
            if kind == "string":
                for i, v in zip(picks, self._string_values(picks, 1_800_000_000), strict=False):
                    pipe.add(_bulk([b"SET", b"str:%d" % i, v]))
            else:
                for k in picks:
                    key = b"%s:%d" % (kind.encode(), k)
                    word = self._slices(lo or 10, hi or 20, 1)[0]
                    cmd = {
                        "hash": [b"HSET", key, b"field00", word],
                        "list": [b"LPUSH", key, word],
                        "set": [b"SADD", key, b"member:changed:%d" % k],
                        "zset": [b"ZADD", key, b"1.5", b"player:changed:%d" % k],
                    }[kind]
                    pipe.add(_bulk(cmd))
            changed[kind] = len(picks)
        pipe.close()
        changed["total"] = sum(changed.values())
        changed["resp_bytes"] = pipe.total
        return changed
